/* log.c -- the library's one log sink: rrpc_set_log_fn and rrpc__log.
 *
 * The library logs rarely -- a lost or recovered link, a refused command,
 * an answer it could not deliver -- and from any thread (workers,
 * heartbeats, the async loop).  So the sink is a callback and its udata
 * under one mutex, held while the callback runs: callbacks never run
 * concurrently, and once rrpc_set_log_fn returns the previous callback is
 * not running and never runs again, so its udata may be freed.  A line
 * logged from inside the callback (the callback calling into rrpc) goes to
 * stderr instead of deadlocking.
 *
 * Every message is made safe for a terminal before anyone sees it: a
 * worker's log line can quote a Redis error, i.e. text anyone who can
 * write to Redis chose.
 */
#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static rrpc_log_fn sink_fn; /* NULL: stderr */
static void *sink_udata;
static _Thread_local int in_sink; /* this thread is inside the callback */

void rrpc_set_log_fn(rrpc_log_fn fn, void *udata)
{
    if (in_sink)
        return; /* the lock is ours already: documented as ignored */
    pthread_mutex_lock(&sink_lock);
    sink_fn = fn;
    sink_udata = udata;
    pthread_mutex_unlock(&sink_lock);
}

/* The default sink: one line on stderr, in one stdio call so lines of
 * different threads do not interleave. */
static void to_stderr(const char *msg)
{
    fprintf(stderr, "%s\n", msg);
}

static void deliver(rrpc_log_level level, const char *msg)
{
    if (in_sink) {
        to_stderr(msg);
        return;
    }
    pthread_mutex_lock(&sink_lock);
    if (sink_fn) {
        in_sink = 1;
        sink_fn(level, msg, sink_udata);
        in_sink = 0;
    } else {
        to_stderr(msg);
    }
    pthread_mutex_unlock(&sink_lock);
}

/* Formats "rrpc[ORIGIN]: TEXT" into BUF (LEN bytes) or, when longer, into
 * new memory (*heap, free()).  Truncated into BUF when out of memory. */
static const char *format(char *buf, size_t len, char **heap, const char *service, const char *who,
                          const char *fmt, va_list ap)
{
    const char *slash = service && who ? "/" : "";
    service = service ? service : "";
    who = who ? who : "";
    va_list measure;
    va_copy(measure, ap);
    int head = snprintf(NULL, 0, "rrpc[%s%s%s]: ", service, slash, who);
    int body = vsnprintf(NULL, 0, fmt, measure);
    va_end(measure);
    size_t total = head < 0 || body < 0 ? len : (size_t)head + (size_t)body + 1;
    char *out = total <= len ? buf : (*heap = malloc(total));
    if (out == NULL) {
        out = buf;
        total = len;
    }
    snprintf(out, total, "rrpc[%s%s%s]: ", service, slash, who);
    size_t used = strlen(out);
    vsnprintf(out + used, total - used, fmt, ap);
    return out;
}

static void vlogf(rrpc_log_level level, const char *service, const char *who, const char *fmt,
                  va_list ap)
{
    char raw[1024], safe_buf[1024 * 4];
    char *raw_heap = NULL, *safe_heap = NULL;
    const char *msg = format(raw, sizeof raw, &raw_heap, service, who, fmt, ap);
    /* An escape is at most four times what it stands for (\xNN for a
     * byte; \u0085 for a 2-byte character is three), so 4 * n + 1 fits. */
    size_t need = strlen(msg) * 4 + 1;
    char *safe = safe_buf;
    if (need > sizeof safe_buf && (safe_heap = malloc(need)) != NULL)
        safe = safe_heap;
    rrpc_safe_text(safe, safe_heap ? need : sizeof safe_buf, msg, 0);
    deliver(level, safe);
    free(safe_heap);
    free(raw_heap);
}

void rrpc__logf(rrpc_log_level level, const char *service, const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlogf(level, service, who, fmt, ap);
    va_end(ap);
}

void rrpc__log(rrpc_log_level level, const char *service, const char *who, const char *what,
               const char *detail)
{
    rrpc__logf(level, service, who, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
}
