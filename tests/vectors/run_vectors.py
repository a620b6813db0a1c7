#!/usr/bin/env python3
# run_vectors.py -- runs the language-neutral rrpc conformance vectors.
#
# The vectors (tests/vectors/*.json, format in README.md) say what a worker
# serving the "calc" service must do with a given request text: answer it,
# stay silent (notification) or record a dead letter.  This script pushes
# each text onto the service list of an already-running worker, watches the
# reply key and <service>:dead, and compares what happened with what
# docs/PROTOCOL.md requires, so that the C, Ruby and Python servers can all
# be held to one set of expectations.
#
# Usage: run_vectors.py [--redis URL] [--service calc] [--prefix P]
#                       [--timeout 5] [--settle 0.1] [-k SUBSTR] [--list] [FILES...]
# URL defaults to $REDIS_URL, then redis://127.0.0.1:6379; FILES default to
# every *.json beside this script.  Exit status: 0 all passed, 1 a case
# failed, 2 bad usage, bad vector file or no worker answering.
# Run it with "$RRPC_PYTHON" (a Python with redis-py: scripts/find-python.sh).
import argparse
import base64
import glob
import hashlib
import json
import os
import re
import secrets
import sys
import time

try:
    import redis
except ImportError:  # pragma: no cover
    sys.stderr.write("run_vectors.py: the redis module is missing; run it with the Python"
                     " scripts/find-python.sh prints (Debian package python3-redis)\n")
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))
EXPECT_KINDS = ("response", "no_reply", "dead_letter", "any_of")
REQUEST_KINDS = ("request", "request_text", "request_hex", "request_generate")


class VectorError(Exception):
    """A vector file is not well formed."""


# ------------------------------------------------------------ JSON helpers --

def _reject_constant(name):
    raise ValueError("not JSON: %s" % name)


_TOKEN = re.compile(r'[ \t\n\r]*(?:([\[\]{}:,])|("(?:[^"\\]|\\.)*")|'
                    r'(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)|(true|false|null))',
                    re.S)
_LITERALS = {"true": True, "false": False, "null": None}


def _loads_iterative(s):
    """A non-recursive JSON parser, for texts nested too deeply for json.loads."""
    stack, root, state, i = [], None, "value", 0
    while True:
        if state == "end":
            if s[i:].strip(" \t\n\r"):
                raise ValueError("extra data at %d" % i)
            return root
        m = _TOKEN.match(s, i)
        if not m:
            raise ValueError("invalid JSON at %d" % i)
        i = m.end()
        punct, string, number, lit = m.groups()
        value, have = None, False
        if state in ("value", "value_or_close"):
            if punct == "]" and state == "value_or_close":
                value, have = stack.pop()[0], True
            elif punct == "[":
                stack.append([[], None])
                state = "value_or_close"
                continue
            elif punct == "{":
                stack.append([{}, None])
                state = "key_or_close"
                continue
            elif string is not None:
                value, have = json.loads(string), True
            elif number is not None:
                value = float(number) if re.search("[.eE]", number) else int(number)
                have = True
            elif lit is not None:
                value, have = _LITERALS[lit], True
            else:
                raise ValueError("value expected at %d" % m.start())
        elif state in ("key", "key_or_close"):
            if punct == "}" and state == "key_or_close":
                value, have = stack.pop()[0], True
            elif string is not None:
                stack[-1][1] = json.loads(string)
                state = "colon"
                continue
            else:
                raise ValueError("key expected at %d" % m.start())
        elif state == "colon":
            if punct != ":":
                raise ValueError("':' expected at %d" % m.start())
            state = "value"
            continue
        elif state == "after":
            top = stack[-1][0]
            if punct == ",":
                state = "value" if isinstance(top, list) else "key"
                continue
            if (punct == "]" and isinstance(top, list)) or (punct == "}" and isinstance(top, dict)):
                value, have = stack.pop()[0], True
            else:
                raise ValueError("',' or end of container expected at %d" % m.start())
        if have:
            if not stack:
                root, state = value, "end"
            else:
                container, key = stack[-1]
                if isinstance(container, list):
                    container.append(value)
                else:
                    container[key] = value
                state = "after"


def strict_loads(text):
    """Parses JSON text strictly (no NaN/Infinity), however deeply nested."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return _loads_iterative(text)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def short(v, limit=160):
    try:
        s = json.dumps(v, ensure_ascii=True)
    except (RecursionError, ValueError):
        s = "<%s nested too deeply to show>" % type(v).__name__
    return s if len(s) <= limit else s[:limit] + "...(%d chars)" % len(s)


def render_path(p):
    """P is a chain (parent, step) built lazily by value_diff; shows its ends only."""
    steps = []
    while isinstance(p, tuple):
        p, step = p
        steps.append(step)
    steps.reverse()
    if len(steps) > 16:
        steps = steps[:6] + ["...(%d levels)..." % (len(steps) - 12)] + steps[-6:]
    return p + "".join(steps)


def value_diff(exp, act, path="$"):
    """None if EXP and ACT are the same JSON value (numbers compared numerically), else a
    description of the first difference.  Iterative, so deep values are fine."""
    work = [(exp, act, path)]
    while work:
        e, a, p = work.pop()
        if is_number(e) and is_number(a):
            if e != a:
                return "%s: expected %s, got %s" % (render_path(p), short(e), short(a))
        elif type(e) is not type(a):
            return "%s: expected %s, got %s" % (render_path(p), short(e), short(a))
        elif isinstance(e, dict):
            if set(e) != set(a):
                return "%s: expected members %s, got %s" % (render_path(p), short(sorted(e)),
                                                            short(sorted(a)))
            work.extend((e[k], a[k], (p, "." + k)) for k in e)
        elif isinstance(e, list):
            if len(e) != len(a):
                return "%s: expected an array of %d, got %d elements" % (render_path(p), len(e),
                                                                         len(a))
            work.extend((e[k], a[k], (p, "[%d]" % k)) for k in range(len(e)))
        elif e != a:
            return "%s: expected %s, got %s" % (render_path(p), short(e), short(a))
    return None


def response_diff(exp, act, path="response"):
    """Compares a JSON-RPC response (or a batch array of them) with the expected one.
    Error objects: code exactly, message and data only if the vector gives them."""
    if isinstance(exp, list):
        if not isinstance(act, list):
            return "%s: expected a batch array, got %s" % (path, short(act))
        if len(exp) != len(act):
            return "%s: expected %d responses, got %d: %s" % (path, len(exp), len(act), short(act))
        for k, (e, a) in enumerate(zip(exp, act)):
            d = response_diff(e, a, "%s[%d]" % (path, k))
            if d:
                return d
        return None
    if not isinstance(act, dict):
        return "%s: expected a response object, got %s" % (path, short(act))
    if set(act) != set(exp):
        return "%s: expected members %s, got %s" % (path, sorted(exp), short(act))
    for k in exp:
        if k == "error" and isinstance(exp[k], dict):
            e, a = exp[k], act[k]
            if not isinstance(a, dict):
                return "%s.error: expected an object, got %s" % (path, short(a))
            if not isinstance(a.get("code"), int) or isinstance(a.get("code"), bool):
                return "%s.error.code: not an integer: %s" % (path, short(a))
            if not isinstance(a.get("message"), str):
                return "%s.error.message: missing or not a string: %s" % (path, short(a))
            extra = set(a) - {"code", "message", "data"}
            if extra:
                return "%s.error: unexpected members %s" % (path, sorted(extra))
            if a["code"] != e["code"]:
                return "%s.error.code: expected %s, got %s (message %s)" % (
                    path, e["code"], a["code"], short(a["message"]))
            for opt in ("message", "data"):
                if opt in e:
                    d = value_diff(e[opt], a.get(opt), "%s.error.%s" % (path, opt))
                    if d:
                        return d
        else:
            d = value_diff(exp[k], act[k], "%s.%s" % (path, k))
            if d:
                return d
    return None


# ------------------------------------------------------------ the vectors --

class Case:
    """One vector, with its placeholders filled in for one run."""

    def __init__(self, fname, index, raw):
        self.file, self.index, self.raw = fname, index, raw
        self.name = raw.get("name")
        self.label = "%s: %s" % (fname, self.name)
        self.reply = "rrpc:reply:vec-%d-%s" % (index, secrets.token_hex(8))
        self.ident = "vec-id-%d-%s" % (index, secrets.token_hex(8))
        self.params = None          # the generated params, for "$PARAMS"

    # "$REPLY", "$ID" in strings; {"$repeat": N, "of": X} / {"$repeat": N, "text": S}.
    def fill(self, v, index=None):
        if isinstance(v, str):
            if v == "$PARAMS" and self.params is not None:
                return self.params
            if v == "$INDEX" and index is not None:
                return index
            v = v.replace("$REPLY", self.reply).replace("$ID", self.ident)
            return v.replace("$INDEX", str(index)) if index is not None else v
        if isinstance(v, list):
            out = []
            for x in v:                       # {"$repeat": N, "$splice": true, ...} adds N elements
                if isinstance(x, dict) and x.get("$splice") is True:
                    out.extend(self.fill(x, index))
                else:
                    out.append(self.fill(x, index))
            return out
        if isinstance(v, dict):
            if "$repeat" in v:
                n = v["$repeat"]
                if "text" in v:
                    return self.fill(v["text"], index) * n
                return [self.fill(v["of"], k) for k in range(n)]
            return {k: self.fill(x, index) for k, x in v.items()}
        return v

    def text(self):
        """The bytes to push."""
        r = self.raw
        if "request" in r:
            return json.dumps(self.fill(r["request"]), ensure_ascii=False, allow_nan=False,
                              separators=(",", ":")).encode("utf-8")
        if "request_text" in r:
            return self.fill(r["request_text"]).encode("utf-8")
        if "request_hex" in r:
            b = bytes.fromhex("".join(r["request_hex"].split()))
            return b.replace(b"$REPLY", self.reply.encode()).replace(b"$ID", self.ident.encode())
        return self.generate(r["request_generate"])

    def generate(self, g):
        head = '{"jsonrpc":"2.0","method":"echo","params":'
        tail = ',"id":"%s"}' % self.reply
        if "echo_string_bytes" in g or "echo_total_bytes" in g:
            fill = g.get("fill", "x")
            unit = len(fill.encode("utf-8"))
            if "echo_total_bytes" in g:
                n = g["echo_total_bytes"] - len((head + '[""]' + tail).encode("utf-8"))
            else:
                n = g["echo_string_bytes"]
            if n < 0 or n % unit:
                raise VectorError("%s: cannot make %d bytes of %r" % (self.label, n, fill))
            self.params = [fill * (n // unit)]
            return (head + json.dumps(self.params, ensure_ascii=False) + tail).encode("utf-8")
        if "echo_nested_arrays" in g:
            d = g["echo_nested_arrays"]
            v = []
            for _ in range(d - 1):
                v = [v]
            self.params = v
            return (head + "[" * d + "]" * d + tail).encode()
        if "echo_nested_objects" in g:
            d = g["echo_nested_objects"]
            v = {}
            for _ in range(d - 1):
                v = {"a": v}
            self.params = v
            return (head + '{"a":' * (d - 1) + "{}" + "}" * (d - 1) + tail).encode()
        raise VectorError("%s: unknown request_generate %s" % (self.label, short(g)))

    def reply_key(self, text):
        if "reply_key" in self.raw:
            return self.fill(self.raw["reply_key"])
        return self.reply if self.reply.encode() in text else None


def expectations(exp):
    """Flattens an expectation into its alternatives (any_of) as (kind, value) pairs."""
    if "any_of" in exp:
        return [next(iter(e.items())) for e in exp["any_of"]]
    return [next(iter(exp.items()))]


def check_case(fname, index, raw):
    where = "%s case %d (%s)" % (fname, index, raw.get("name") if isinstance(raw, dict) else "?")
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise VectorError("%s: a case is an object with a string 'name'" % where)
    req = [k for k in REQUEST_KINDS if k in raw]
    if len(req) != 1:
        raise VectorError("%s: needs exactly one of %s" % (where, ", ".join(REQUEST_KINDS)))
    exp = raw.get("expect")
    if not isinstance(exp, dict) or len(exp) != 1 or next(iter(exp)) not in EXPECT_KINDS:
        raise VectorError("%s: 'expect' must hold exactly one of %s" % (where, ", ".join(EXPECT_KINDS)))
    if "any_of" in exp:
        alts = exp["any_of"]
        if (not isinstance(alts, list) or len(alts) < 2 or
                any(not isinstance(a, dict) or len(a) != 1 or next(iter(a)) not in EXPECT_KINDS[:3]
                    for a in alts)):
            raise VectorError("%s: any_of is a list of two or more simple expectations" % where)
    for kind, val in expectations(exp):
        if kind == "dead_letter" and not isinstance(val, dict):
            raise VectorError("%s: dead_letter takes an object" % where)
        if kind == "no_reply" and val is not True:
            raise VectorError("%s: no_reply must be true" % where)
    unknown = set(raw) - set(REQUEST_KINDS) - {"name", "expect", "reply_key", "absent_keys",
                                               "setup", "comment", "unchanged_keys",
                                               "registered"}
    if unknown:
        raise VectorError("%s: unknown fields %s" % (where, sorted(unknown)))


def load(files):
    cases, seen = [], set()
    for path in files:
        fname = os.path.basename(path)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise VectorError("%s: %s" % (path, e))
        if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
            raise VectorError("%s: expected {\"description\": ..., \"cases\": [...]}" % path)
        for raw in doc["cases"]:
            check_case(fname, len(cases), raw)
            label = "%s: %s" % (fname, raw["name"])
            if label in seen:
                raise VectorError("duplicate case name %s" % label)
            seen.add(label)
            cases.append(Case(fname, len(cases), raw))
    return cases


# ------------------------------------------------------------ the runner --

class DeadWatcher:
    """Finds the entries that arrive on the dead-letter list after it is created.
    It re-reads the list only when its length or the stats 'dead' counter moved
    (or now and then, for a list trimmed at its bound), as entries can be large."""

    def __init__(self, r, key, stats):
        self.r, self.key, self.stats = r, key, stats
        self.anchor = r.lindex(key, -1)       # newest entry before the case, or None
        self.mark = self.cheap_mark()
        self.new = []
        self.polls = 0

    def cheap_mark(self):
        p = self.r.pipeline(transaction=False)
        p.llen(self.key)
        p.hget(self.stats, "dead")
        return tuple(p.execute())

    def poll(self):
        """Returns the new entries (parsed; unparsable ones as strings)."""
        self.polls += 1
        mark = self.cheap_mark()
        if mark == self.mark and self.polls % 200:
            return self.new
        self.mark = mark
        n = mark[0]
        window = 64
        while True:
            items = self.r.lrange(self.key, -window, -1)
            if self.anchor is None:
                fresh = items
                break
            try:
                pos = len(items) - 1 - items[::-1].index(self.anchor)
                fresh = items[pos + 1:]
                break
            except ValueError:
                if window >= n:               # anchor trimmed away: all are new
                    fresh = items
                    break
                window *= 4
        out = []
        for raw in fresh:
            try:
                out.append(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, ValueError, RecursionError):
                out.append(raw.decode("utf-8", errors="replace"))
        self.new = out
        return out


def same_message(entry, message, text):
    """Whether a dead letter holds TEXT: as `message` (a JSON string) when TEXT is valid
    UTF-8 (MESSAGE), else byte for byte as standard base64 in `message_base64`; or, for a
    text too large to keep, by its length and SHA-1 (`message_bytes`, `message_sha1`)."""
    if "message_sha1" in entry:
        return (entry.get("message_sha1") == hashlib.sha1(text).hexdigest()
                and entry.get("message_bytes") == len(text))
    if message is not None:
        return entry.get("message") == message
    b64 = entry.get("message_base64")
    if not isinstance(b64, str):
        return False
    try:
        return base64.b64decode(b64, validate=True) == text
    except ValueError:
        return False


PREFIX_MAX = 4096                         # PROTOCOL.md section 6: a bounded copy's prefix


def bounded_diff(entry, text):
    """None if dead letter ENTRY keeps TEXT as a bounded copy (section 6): no `message`, its
    first bytes (at most 4096) as `message_prefix` (or `message_prefix_base64`), its length
    as `message_bytes` and its SHA-1 as `message_sha1`."""
    if "message" in entry or "message_base64" in entry:
        return "the dead letter keeps the whole oversized message (%s)" % (
            "message" if "message" in entry else "message_base64")
    if entry.get("message_bytes") != len(text):
        return "message_bytes is %s, expected %d" % (short(entry.get("message_bytes")), len(text))
    if entry.get("message_sha1") != hashlib.sha1(text).hexdigest():
        return "message_sha1 is %s, expected the SHA-1 of the text" % short(entry.get("message_sha1"))
    if isinstance(entry.get("message_prefix"), str):
        prefix = entry["message_prefix"].encode("utf-8", "surrogatepass")
    elif isinstance(entry.get("message_prefix_base64"), str):
        prefix = base64.b64decode(entry["message_prefix_base64"])
    else:
        return "the dead letter has no message_prefix"
    if len(prefix) > PREFIX_MAX or not text.startswith(prefix):
        return "message_prefix is not a start of the text of at most %d bytes" % PREFIX_MAX
    return None


def key_state(r, key):
    """What a refused reply key must keep: its type, whether it expires, its value."""
    ttl = r.pttl(key)
    return (r.type(key), -2 if ttl == -2 else -1 if ttl == -1 else "expires", r.dump(key))


class Runner:
    def __init__(self, args):
        self.args = args
        self.r = redis.Redis.from_url(args.redis)
        self.queue = args.prefix + args.service
        self.services = args.prefix + "rrpc:services"
        self.dead = self.queue + ":dead"
        self.stats = self.queue + ":stats"
        self.alive = True                     # the last case's sentinel was answered
        self.pushed = b""                     # the text of the case in hand
        self.registered_at = None             # when the cases' "registered" names were added
        self.registered = set()

    def llen(self, key):
        try:
            return self.r.llen(key)
        except redis.ResponseError:          # not a list (a vector's setup made it so)
            return 0

    def push_sentinel(self):
        key = "rrpc:reply:vec-sentinel-" + secrets.token_hex(16)
        self.r.rpush(self.queue, json.dumps({"jsonrpc": "2.0", "method": "echo",
                                             "params": ["sentinel"], "id": key}))
        return key

    def preflight(self):
        key = self.push_sentinel()
        got = self.r.blpop([key], timeout=max(1, int(self.args.timeout + 0.999)))
        self.r.delete(key)
        return got is not None

    def dead_count(self):
        v = self.r.hget(self.stats, "dead")
        try:
            return int(v or 0)
        except ValueError:
            return 0

    def observe(self, case, text, reply_key, wants_nothing):
        """Pushes the case; returns (kind, detail) with kind one of response, dead,
        nothing (no reply and no dead letter once the sentinel was answered), timeout."""
        a = self.args
        try:
            message = text.decode("utf-8")
        except UnicodeDecodeError:
            message = None                    # invalid UTF-8: kept as message_base64
        watcher = DeadWatcher(self.r, self.dead, self.stats)
        dead_before = self.dead_count()
        self.r.rpush(self.queue, text)
        sentinel = self.push_sentinel()
        t0, sentinel_at, result = time.monotonic(), None, None
        while result is None:
            now = time.monotonic()
            if reply_key is not None and self.llen(reply_key) > 0:
                ttl = self.r.ttl(reply_key)
                t1 = time.monotonic()
                while ttl == -1 and time.monotonic() - t1 < 0.5:   # RPUSH seen before EXPIRE
                    time.sleep(0.005)
                    ttl = self.r.ttl(reply_key)
                items = self.r.lrange(reply_key, 0, -1)
                self.r.delete(reply_key)
                result = ("response", (items, ttl))
                break
            for e in watcher.poll():
                if isinstance(e, dict) and same_message(e, message, text):
                    result = ("dead", (e, dead_before))
                    break
            if result is not None:
                break
            if sentinel_at is None and self.llen(sentinel) > 0:
                sentinel_at = now
            if wants_nothing and sentinel_at is not None and now - sentinel_at >= a.settle:
                result = ("nothing", None)
            elif now - t0 > a.timeout:
                result = ("timeout", watcher.new)
            else:
                time.sleep(0.003)
        # Let the sentinel through before the next case, so that cases do not overlap.
        deadline = time.monotonic() + a.timeout
        while self.llen(sentinel) == 0 and time.monotonic() < deadline:
            time.sleep(0.003)
        self.alive = self.r.delete(sentinel) > 0
        return result

    def judge(self, case, kind, val, outcome, reply_key):
        """None if OUTCOME meets one expectation (KIND, VAL), else why not."""
        okind, detail = outcome
        if kind == "response":
            if okind != "response":
                return "expected a response, got %s" % describe(outcome)
            items, ttl = detail
            if ttl is None or ttl <= 0:
                return "the reply key has no positive TTL (TTL %s)" % ttl
            if len(items) != 1:
                return "the reply key holds %d elements, expected exactly one" % len(items)
            try:
                act = strict_loads(items[0].decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                return "the response is not valid UTF-8 JSON (%s): %r" % (e, items[0][:200])
            return response_diff(case.fill(val), act)
        if kind == "no_reply":
            if okind != "nothing":
                return "expected no reply and no dead letter, got %s" % describe(outcome)
            return None
        # dead_letter
        if okind != "dead":
            return "expected a dead letter (%s), got %s" % (val.get("reason_prefix", ""),
                                                            describe(outcome))
        entry, dead_before = detail
        reason = entry.get("reason")
        if not isinstance(reason, str):
            return "dead letter without a string reason: %s" % short(entry)
        prefix = val.get("reason_prefix", "")
        if not reason.startswith(prefix):
            return "dead letter reason %r does not start with %r" % (reason, prefix)
        if entry.get("service") != self.args.service:
            return "dead letter service is %s, expected %r" % (short(entry.get("service")),
                                                               self.args.service)
        if not is_number(entry.get("time")):
            return "dead letter time is not a number: %s" % short(entry.get("time"))
        if val.get("bounded"):
            d = bounded_diff(entry, self.pushed)
            if d:
                return d
        if "response" in val:
            if "response" not in entry:
                return "dead letter has no 'response' member: %s" % short(entry)
            got = entry["response"]
            if isinstance(got, str):          # accept the response as a value or as JSON text
                try:
                    got = strict_loads(got)
                except ValueError:
                    pass
            d = response_diff(case.fill(val["response"]), got, "dead letter response")
            if d:
                return d
        if reply_key is not None:
            try:
                if self.r.type(reply_key) == b"list":
                    return "a dead letter was recorded but the reply key %r was answered too" % reply_key
            except redis.ResponseError:
                pass
        deadline = time.monotonic() + min(self.args.timeout, 2.0)
        while self.dead_count() <= dead_before:
            if time.monotonic() > deadline:
                return "the dead letter was not counted in %s (field 'dead')" % self.stats
            time.sleep(0.005)
        return None

    def register(self, cases):
        """Adds the names the cases want registered to rrpc:services (section 9): workers
        read the set at most every 5 s, so the cases that need them wait for that."""
        names = set()
        for c in cases:
            names.update(c.raw.get("registered", []))
        if names:
            self.registered = names - {n.decode() for n in self.r.smembers(self.services)}
            self.r.sadd(self.services, *names)
            self.registered_at = time.monotonic()

    def unregister(self):
        if self.registered:
            self.r.srem(self.services, *self.registered)

    def run_case(self, case):
        if case.raw.get("registered") and self.registered_at is not None:
            wait = self.registered_at + 5.5 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        text = case.text()
        self.pushed = text
        reply_key = case.reply_key(text)
        absent = [case.fill(k) for k in case.raw.get("absent_keys", [])]
        self.r.delete(*([case.reply] + ([reply_key] if reply_key else []) + absent))
        for cmd in case.raw.get("setup", []):
            self.r.execute_command(*[case.fill(x) for x in cmd])
        unchanged = [case.fill(k) for k in case.raw.get("unchanged_keys", [])]
        states = {k: key_state(self.r, k) for k in unchanged}
        alts = expectations(case.raw["expect"])
        if any(k == "response" for k, _ in alts) and reply_key is None:
            raise VectorError("%s: expects a response but names no reply key ($REPLY or "
                              "reply_key)" % case.label)
        outcome = self.observe(case, text, reply_key, any(k == "no_reply" for k, _ in alts))
        reasons = []
        for kind, val in alts:
            why = self.judge(case, kind, val, outcome, reply_key)
            if why is None:
                reasons = []
                break
            reasons.append(why)
        for k in absent + ([reply_key] if reply_key and outcome[0] != "response" else []):
            if self.r.exists(k) and not case.raw.get("setup"):
                reasons.append("key %r exists but must not" % k)
        for k in unchanged:
            now = key_state(self.r, k)
            if now != states[k]:
                reasons.append("key %r changed: type %s -> %s, expiry %s -> %s%s" % (
                    k, states[k][0], now[0], states[k][1], now[1],
                    "" if now[2] == states[k][2] else ", and its value"))
        for cmd in case.raw.get("setup", []):   # the keys a case made are its own
            if len(cmd) > 1:
                self.r.delete(case.fill(cmd[1]))
        self.r.delete(*([case.reply] + ([reply_key] if reply_key else []) + absent))
        return reasons


def clip(s, limit):
    return s if len(s) <= limit else s[:limit] + "...(%d chars)" % len(s)


def describe(outcome):
    kind, detail = outcome
    if kind == "response":
        items, _ttl = detail
        return "a response %s" % (clip(items[0].decode("utf-8", "replace"), 300) if items else "[]")
    if kind == "dead":
        e = dict(detail[0])
        if isinstance(e.get("message"), str):
            e["message"] = clip(e["message"], 120)
        return "a dead letter %s" % short(e, 400)
    if kind == "nothing":
        return "nothing (no reply, no dead letter)"
    others = ""
    if detail:                                # dead letters that arrived but did not match
        others = " (%d other new dead letter(s), e.g. %s)" % (len(detail), short(detail[-1], 300))
    return "nothing within the timeout" + others


def main():
    ap = argparse.ArgumentParser(description="Runs rrpc conformance vectors against a running "
                                             "calc worker.")
    ap.add_argument("--redis", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379")
    ap.add_argument("--service", default="calc")
    ap.add_argument("--prefix", default="", help="the deployment's key prefix (default none)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait per case")
    ap.add_argument("--settle", type=float, default=0.1,
                    help="extra seconds to wait after the sentinel (multi-worker servers)")
    ap.add_argument("-k", dest="select", help="run only cases whose 'file: name' contains this")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    files = args.files or sorted(glob.glob(os.path.join(HERE, "*.json")))
    try:
        cases = load(files)
    except VectorError as e:
        print("run_vectors.py: %s" % e, file=sys.stderr)
        return 2
    if args.select:
        cases = [c for c in cases if args.select in c.label]
    if args.list:
        for c in cases:
            print(c.label)
        return 0
    runner = Runner(args)
    try:
        if not runner.preflight():
            print("run_vectors.py: no worker answered an echo on %r at %s within %gs"
                  % (runner.queue, args.redis, args.timeout), file=sys.stderr)
            return 2
    except redis.RedisError as e:
        print("run_vectors.py: cannot use Redis at %s: %s" % (args.redis, e), file=sys.stderr)
        return 2
    failed = 0
    runner.register(cases)
    for n, c in enumerate(cases):
        try:
            reasons = runner.run_case(c)
        except VectorError as e:
            print("run_vectors.py: %s" % e, file=sys.stderr)
            return 2
        if reasons:
            failed += 1
            print("FAIL  %s\n      %s" % (c.label, "\n      or: ".join(reasons)))
        else:
            print("PASS  %s" % c.label)
        sys.stdout.flush()
        if not runner.alive:
            rest = len(cases) - n - 1
            print("STOP  the worker stopped answering after this case (its echo sentinel got no "
                  "reply); %d case(s) not run" % rest)
            failed += rest
            break
    runner.unregister()
    print("%d cases: %d passed, %d failed" % (len(cases), len(cases) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
