/* ratelimit.c -- the limits table of a service and the state a running
 * server keeps of it (ratelimit.h; PROTOCOL.md section 9, "Limits").
 *
 * The table is read from JSON strictly: a member rrpc does not know, a
 * rate of 0 or a cap that is not a positive integer refuses the whole
 * object, so that a typo never passes as "no limit".
 */
#define _POSIX_C_SOURCE 200809L
#include "core/ratelimit.h"

#include "core/log.h"

#include <jansson.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rrpc__rl_free(rrpc__rl_table *t)
{
    while (t != NULL) {
        rrpc__rl_table *older = t->older;
        for (size_t i = 0; i < t->count; i++)
            free(t->rules[i].scope);
        free(t->rules);
        free(t);
        t = older;
    }
}

/* A positive finite number, or (INTEGER) a positive integer. */
static int positive(const json_t *v, int integer, double *out)
{
    if (integer ? !json_is_integer(v) : !json_is_number(v))
        return 0;
    *out = json_number_value(v);
    return isfinite(*out) && *out > 0;
}

/* Reads the rule NAME: OBJ into R. */
static int read_rule(const char *name, const json_t *obj, rrpc__rl_rule *r, char *err,
                     size_t errlen)
{
    if (!json_is_object(obj))
        return rrpc__fail(err, errlen, RRPC_EINVAL, "limits: \"%s\" must be an object", name);
    const char *member;
    const json_t *v;
    double d;
    r->burst = 1;
    json_object_foreach((json_t *)obj, member, v)
    {
        if (strcmp(member, "rate") == 0 && positive(v, 0, &d))
            r->rate = d;
        else if (strcmp(member, "burst") == 0 && json_is_number(v) && json_number_value(v) >= 1 &&
                 isfinite(json_number_value(v)))
            r->burst = json_number_value(v);
        else if (strcmp(member, "concurrency") == 0 && positive(v, 1, &d))
            r->concurrency = (long)d;
        else if (strcmp(member, "per_tenant") == 0 && json_is_boolean(v))
            r->per_tenant = json_is_true(v);
        else if (strcmp(member, "over") == 0 && json_is_string(v) &&
                 (strcmp(json_string_value(v), "wait") == 0 ||
                  strcmp(json_string_value(v), "refuse") == 0))
            r->wait = strcmp(json_string_value(v), "wait") == 0;
        else
            return rrpc__fail(err, errlen, RRPC_EINVAL,
                              "limits: \"%s\": bad or unknown member \"%s\" (rate > 0, burst >= "
                              "1, concurrency a positive integer, per_tenant true/false, over "
                              "\"wait\"/\"refuse\")",
                              name, member);
    }
    if (r->rate == 0 && r->concurrency == 0)
        return rrpc__fail(err, errlen, RRPC_EINVAL,
                          "limits: \"%s\" sets neither a rate nor a concurrency", name);
    return (r->scope = strdup(name)) ? RRPC_OK : RRPC_ENOMEM;
}

int rrpc__rl_parse(const char *text, size_t len, rrpc__rl_table **out, char *err, size_t errlen)
{
    *out = NULL;
    json_error_t jerr;
    json_t *obj = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return rrpc__fail(err, errlen, RRPC_EINVAL, "limits: not a JSON object%s%s",
                          obj ? "" : ": ", obj ? "" : jerr.text);
    }
    rrpc__rl_table *t = calloc(1, sizeof *t);
    size_t n = json_object_size(obj);
    if (t != NULL)
        t->rules = calloc(n ? n : 1, sizeof *t->rules);
    int rc = t && t->rules ? RRPC_OK : RRPC_ENOMEM;
    const char *name;
    const json_t *v;
    json_object_foreach(obj, name, v)
    {
        if (rc != RRPC_OK)
            break;
        if (name[0] == '\0')
            rc = rrpc__fail(err, errlen, RRPC_EINVAL, "limits: empty method name");
        else if ((rc = read_rule(name, v, &t->rules[t->count], err, errlen)) == RRPC_OK)
            t->count++;
    }
    json_decref(obj);
    if (rc != RRPC_OK) {
        if (rc == RRPC_ENOMEM)
            rrpc__fail(err, errlen, rc, "out of memory");
        rrpc__rl_free(t);
        return rc;
    }
    for (size_t i = 0; i < t->count; i++)
        if (strcmp(t->rules[i].scope, "*") == 0)
            t->star = &t->rules[i];
    *out = t;
    return RRPC_OK;
}

const rrpc__rl_rule *rrpc__rl_find(const rrpc__rl_table *t, const char *method)
{
    for (size_t i = 0; i < t->count; i++)
        if (&t->rules[i] != t->star && strcmp(t->rules[i].scope, method) == 0)
            return &t->rules[i];
    return NULL;
}

int rrpc__tenant_ok(const char *tenant, size_t len)
{
    if (len == 0 || len > RRPC__TENANT_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)tenant[i] < 0x20 || tenant[i] == 0x7f)
            return 0;
    return 1;
}

/* ---- the running server's state ------------------------------------------ */

void rrpc__rl_state_init(rrpc__rl_state *s, const char *service)
{
    memset(s, 0, sizeof *s);
    atomic_store(&s->current, NULL);
    s->service = service;
    s->lease_ms = 5000;
    pthread_mutex_init(&s->mu, NULL);
}

void rrpc__rl_state_clear(rrpc__rl_state *s)
{
    rrpc__rl_free(atomic_load(&s->current));
    rrpc__rl_free(s->retired);
    free(s->text);
    free(s->leases);
    pthread_mutex_destroy(&s->mu);
    memset(s, 0, sizeof *s);
}

/* Makes T (NULL: none) current; the one it replaces is retired. */
static void install(rrpc__rl_state *s, rrpc__rl_table *t)
{
    rrpc__rl_table *old = atomic_exchange(&s->current, t);
    if (old != NULL) {
        old->older = s->retired;
        s->retired = old;
    }
    if (t != NULL)
        atomic_store(&s->ever, 1);
}

void rrpc__rl_update(rrpc__rl_state *s, const char *text, size_t len)
{
    pthread_mutex_lock(&s->mu);
    int same = text == NULL
                   ? s->text == NULL
                   : s->text != NULL && strlen(s->text) == len && memcmp(s->text, text, len) == 0;
    if (same) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    free(s->text);
    s->text = text ? strndup(text, len) : NULL;
    rrpc__rl_table *t = NULL;
    char err[RRPC__ERRMSG_LEN] = "";
    if (text != NULL && rrpc__rl_parse(text, len, &t, err, sizeof err) != RRPC_OK) {
        snprintf(s->error, sizeof s->error, "%s", err);
        pthread_mutex_unlock(&s->mu);
        rrpc__log(RRPC_LOG_ERROR, s->service, "limits",
                  "the limits field is refused; the last good limits stay", err);
        return;
    }
    s->error[0] = '\0';
    install(s, t);
    pthread_mutex_unlock(&s->mu);
    rrpc__log(RRPC_LOG_INFO, s->service, "limits", t ? "limits now in force" : "no limits",
              text ? s->text : NULL);
}

void rrpc__rl_hold(rrpc__rl_state *s, const char *key, const char *member)
{
    pthread_mutex_lock(&s->mu);
    if (s->nleases == s->capleases) {
        size_t cap = s->capleases ? s->capleases * 2 : 8;
        rrpc__rl_lease *l = realloc(s->leases, cap * sizeof *l);
        if (l == NULL) {
            pthread_mutex_unlock(&s->mu);
            return;
        }
        s->leases = l;
        s->capleases = cap;
    }
    rrpc__rl_lease *l = &s->leases[s->nleases++];
    snprintf(l->key, sizeof l->key, "%s", key);
    snprintf(l->member, sizeof l->member, "%s", member);
    pthread_mutex_unlock(&s->mu);
}

void rrpc__rl_drop(rrpc__rl_state *s, const char *key, const char *member)
{
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->nleases; i++)
        if (strcmp(s->leases[i].key, key) == 0 && strcmp(s->leases[i].member, member) == 0) {
            s->leases[i] = s->leases[--s->nleases];
            break;
        }
    pthread_mutex_unlock(&s->mu);
}

rrpc__rl_lease *rrpc__rl_leases(rrpc__rl_state *s, size_t *n)
{
    pthread_mutex_lock(&s->mu);
    *n = s->nleases;
    rrpc__rl_lease *copy = *n ? malloc(*n * sizeof *copy) : NULL;
    if (copy != NULL)
        memcpy(copy, s->leases, *n * sizeof *copy);
    else
        *n = 0;
    pthread_mutex_unlock(&s->mu);
    return copy;
}
