#!/usr/bin/env python3
# reference_server.py -- a plain, single-threaded Python "calc" worker for rrpc.
#
# It follows docs/PROTOCOL.md to the letter and nothing more, so that the
# conformance vectors in this directory can be checked against something
# while the real C, Ruby and Python servers are being written, and so that
# there is a small, readable reference peer.  It is not the production
# Python peer: no threads, no deadlines, no reconnection.
#
# Usage: reference_server.py [--redis URL] [--service calc] [--prefix P]
#                            [--ttl 60] [--max-bytes 1048576] [--batch-max 1000]
#                            [--dead-max 1000] [--batch-time 5] [--reply-prefix P ...]
# URL defaults to $REDIS_URL, then redis://127.0.0.1:6379.  Stops on SIGINT/SIGTERM.
import argparse
import base64
import hashlib
import json
import math
import os
import signal
import sys
import time

import redis


class RpcError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------- calc ----

def get_params(params, names):
    """Returns the values of NAMES from positional or named PARAMS (exact count)."""
    if isinstance(params, list):
        if len(params) != len(names):
            raise RpcError(-32602, "invalid params: expected %d parameters (%s), got %d"
                           % (len(names), ", ".join(names), len(params)))
        return list(params)
    if isinstance(params, dict):
        for n in names:
            if n not in params:
                raise RpcError(-32602, "invalid params: missing parameter '%s'" % n)
        extra = sorted(set(params) - set(names))
        if extra:
            raise RpcError(-32602, "invalid params: unexpected parameter '%s'" % extra[0])
        return [params[n] for n in names]
    raise RpcError(-32602, "invalid params: expected %s" % ", ".join(names))


def numbers(params, names):
    vals = get_params(params, names)
    for n, v in zip(names, vals):
        if not is_number(v):
            raise RpcError(-32602, "invalid params: '%s' must be a number" % n)
    return vals


def arith(op):
    def method(params):
        a, b = numbers(params, ("a", "b"))
        r = op(a, b)
        return r if isinstance(a, int) and isinstance(b, int) else float(r)
    return method


def divide(params):
    a, b = numbers(params, ("a", "b"))
    if b == 0:
        raise RpcError(1, "division by zero")
    return float(a / b)


def echo(params):
    return params


def sleep(params):
    (ms,) = numbers(params, ("ms",))
    if ms < 0:
        raise RpcError(-32602, "invalid params: 'ms' must not be negative")
    time.sleep(ms / 1000.0)
    return ms


METHODS = {
    "add": arith(lambda a, b: a + b),
    "subtract": arith(lambda a, b: a - b),
    "multiply": arith(lambda a, b: a * b),
    "divide": divide,
    "echo": echo,
    "sleep": sleep,
}


# ------------------------------------------------------------ protocol ----

def reject_constant(name):
    raise ValueError("invalid literal %s" % name)


def parse(text_bytes):
    """Returns (value, None) or (None, reason) for a request text."""
    try:
        text = text_bytes.decode("utf-8")          # strict: rejects surrogates, overlongs
    except UnicodeDecodeError as e:
        return None, "invalid UTF-8 at byte %d" % e.start
    try:
        return json.loads(text, parse_constant=reject_constant), None
    except RecursionError:
        return None, "parse error: nesting too deep"
    except (ValueError, TypeError) as e:            # JSONDecodeError is a ValueError
        return None, "parse error: %s" % e


MAX_EXACT = 2 ** 53


def reply_key(obj):
    """Section 3, "Which key": the reply key of a request object, or None."""
    if not isinstance(obj, dict):
        return None
    rt = obj.get("reply_to")
    if isinstance(rt, str) and rt != "":
        return rt
    i = obj.get("id")
    if isinstance(i, str):
        return i if i != "" else None
    if isinstance(i, bool) or not is_number(i):
        return None
    if isinstance(i, float) and (not math.isfinite(i) or i != math.floor(i)):
        return None
    if abs(i) > MAX_EXACT:
        return None
    return str(int(i))                              # 100.0, 1e2 -> "100"; -0.0 -> "0"


# Section 3, rule 5: the reply script, byte for byte.
REPLY_SCRIPT = """-- rrpc reply v2: KEYS = reply keys, ARGV[1] = ttl in seconds, ARGV[1+i] = response for KEYS[i].
-- Pushes only onto a reply list: a key that does not exist, or a list that has an expiry.
-- Each distinct key is judged once, then pushed onto in order and expired once.
local out, verdict, values, order = {}, {}, {}, {}
for i, k in ipairs(KEYS) do
  local v = verdict[k]
  if v == nil then
    local t = redis.call('TYPE', k).ok
    if t == 'none' or (t == 'list' and redis.call('PTTL', k) >= 0) then
      v = 1
      values[k] = {}
      order[#order + 1] = k
    elseif t == 'list' then
      v = 'list without expiry'
    else
      v = t
    end
    verdict[k] = v
  end
  if v == 1 then
    local vs = values[k]
    vs[#vs + 1] = ARGV[i + 1]
  end
  out[i] = v
end
for _, k in ipairs(order) do
  local vs = values[k]
  for j = 1, #vs, 1000 do
    redis.call('RPUSH', k, unpack(vs, j, math.min(j + 999, #vs)))
  end
  redis.call('EXPIRE', k, ARGV[1])
end
return out
"""


def refusal(key, prefix, service, services, allowed):
    """Section 3, "Which keys a worker accepts", rules 1 to 4: None, or the reason."""
    k = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    p = prefix.encode()
    lst = (prefix + service).encode()
    if (k in (lst, lst + b":dead", lst + b":stats")
            or (k.startswith(lst + b"#") and k[len(lst) + 1:].isdigit())
            or (k.startswith(b"{" + lst + b"}") and len(k) > len(lst) + 2)):
        return "reply key refused: one of the service's own keys"
    if ((k.startswith(p + b"rrpc:") and not k.startswith(p + b"rrpc:reply:"))
            or (k.startswith(b"{") and b"}:" in k[1:])
            or k.endswith(b":dead") or k.endswith(b":stats")):
        return "reply key refused: one of rrpc's keys"
    if k.startswith(p):
        name = k[len(p):]
        base, sep, num = name.rpartition(b"#")
        if name in services or (sep and base and num.isdigit() and base in services):
            return "reply key refused: a service's request list"
    if allowed is not None and not any(k.startswith(a.encode()) for a in allowed):
        return "reply key refused: not under an allowed prefix"
    return None
def valid_id(v):
    return v is None or isinstance(v, str) or is_number(v)


def error_response(code, message, id_, data=None):
    err = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": id_}


def check(obj):
    """Returns (problem, id) for a request object: problem is None if it is valid."""
    if not isinstance(obj, dict):
        return "not an object", None
    id_ = obj["id"] if "id" in obj and valid_id(obj["id"]) else None
    if obj.get("jsonrpc") != "2.0":
        return "'jsonrpc' must be \"2.0\"", id_
    if not isinstance(obj.get("method"), str):
        return "'method' must be a string", id_
    if "params" in obj and not isinstance(obj["params"], (list, dict)):
        return "'params' must be an array or an object", id_
    if "id" in obj and not valid_id(obj["id"]):
        return "'id' must be a string, a number or null", id_
    return None, id_


def is_notification(obj):
    # Only a *valid* request without "id" is a notification; an invalid one is
    # answered with an error whose id is null (JSON-RPC 2.0, section 5 examples).
    return check(obj)[0] is None and "id" not in obj


def handle_one(obj, over_time=None):
    """Runs one request object.  Returns the response, or None for a notification.
    OVER_TIME (seconds): its batch ran out of time, a valid request is answered -32001."""
    problem, id_ = check(obj)
    if problem:
        return error_response(-32600, "invalid request: " + problem, id_)
    if over_time is not None:
        return None if is_notification(obj) else error_response(
            -32001, "Batch time limit exceeded", id_, {"limit_ms": int(over_time * 1000)})
    fn = METHODS.get(obj["method"])
    try:
        if fn is None:
            raise RpcError(-32601, "method not found: %s" % obj["method"])
        result = fn(obj.get("params"))
        resp = {"jsonrpc": "2.0", "result": result, "id": id_}
        json.dumps(resp, allow_nan=False)           # an infinite result is an internal error
    except RpcError as e:
        resp = error_response(e.code, e.message, id_, e.data)
    except Exception as e:                          # noqa: BLE001 -- the handler failed
        resp = error_response(-32603, "internal error: %s" % e, id_)
    return None if is_notification(obj) else resp


class Worker:
    def __init__(self, args):
        self.r = redis.Redis.from_url(args.redis)
        self.args = args
        self.queue = args.prefix + args.service
        self.dead = self.queue + ":dead"
        self.stats = self.queue + ":stats"
        self.stopping = False
        self.script = self.r.register_script(REPLY_SCRIPT)   # EVALSHA, EVAL on NOSCRIPT
        self.services_at, self.known = -1e9, set()

    def count(self, field, n=1):
        self.r.hincrby(self.stats, field, n)

    def dead_letter(self, reason, text_bytes, response=None):
        """Section 6: a message (or response) longer than the size limit is kept as its first
        4096 bytes, its length and its SHA-1."""
        entry = {"reason": reason, "time": time.time(), "service": self.args.service}
        self.put_text(entry, "message", text_bytes)
        if response is not None:
            body = json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode()
            if len(body) <= self.args.max_bytes:
                entry["response"] = response
            else:
                self.put_text(entry, "response", body)
        p = self.r.pipeline(transaction=False)
        p.rpush(self.dead, json.dumps(entry, ensure_ascii=True))
        p.ltrim(self.dead, -self.args.dead_max, -1)
        p.hincrby(self.stats, "dead", 1)
        p.execute()

    def put_text(self, entry, name, data):
        if len(data) > self.args.max_bytes:
            cut = 4096
            while cut > 0 and cut < len(data) and (data[cut] & 0xC0) == 0x80:
                cut -= 1                            # do not split a UTF-8 sequence
            self.put_bytes(entry, name + "_prefix", data[:cut])
            entry[name + "_bytes"] = len(data)
            entry[name + "_sha1"] = hashlib.sha1(data).hexdigest()
        else:
            self.put_bytes(entry, name, data)

    @staticmethod
    def put_bytes(entry, name, data):
        try:
            entry[name] = data.decode("utf-8")
        except UnicodeDecodeError:                  # not a JSON string: kept byte for byte
            entry[name + "_base64"] = base64.b64encode(data).decode("ascii")

    def services(self):
        """The registered services' names, read at most every 5 s (rule 3)."""
        now = time.monotonic()
        if now - self.services_at >= 5:
            self.services_at = now
            try:
                self.known = set(self.r.smembers(self.args.prefix + "rrpc:services"))
            except redis.ResponseError:             # refused: the rule is skipped
                self.known = set()
        return self.known

    def reply(self, key, response, text_bytes):
        why = refusal(key, self.args.prefix, self.args.service, self.services(),
                      self.args.reply_prefix)
        if why is not None:
            self.dead_letter(why, text_bytes, response)
            return
        out = json.dumps(response, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        k = key.encode("utf-8", "surrogatepass")
        try:
            got = self.script(keys=[k], args=[self.args.ttl, out])
        except redis.ResponseError as e:
            self.dead_letter("reply failed: %s" % e, text_bytes, response)
            return
        if got[0] != 1:
            what = got[0].decode() if isinstance(got[0], bytes) else str(got[0])
            self.dead_letter("reply key refused: %s" % what, text_bytes, response)

    def handle(self, text_bytes):
        self.count("messages")
        if len(text_bytes) > self.args.max_bytes:
            self.dead_letter("too large: %d bytes (limit %d)"
                             % (len(text_bytes), self.args.max_bytes), text_bytes)
            return
        value, reason = parse(text_bytes)
        if reason is not None:
            self.dead_letter(reason, text_bytes)
            return
        if isinstance(value, list):
            # Section 5: the reply key of the first element that is answered and has one;
            # notifications have none (section 3 applies to requests that are not
            # notifications) -- the same for a batch over the limit.
            key = next((k for k in (reply_key(e) for e in value if not is_notification(e))
                        if k is not None), None)
            if not value:
                response = error_response(-32600, "invalid request: empty batch", None)
            elif len(value) > self.args.batch_max:
                response = error_response(-32600, "invalid request: batch of %d elements "
                                          "(limit %d)" % (len(value), self.args.batch_max), None)
            else:
                started, response = time.monotonic(), []
                for e in value:
                    late = time.monotonic() - started >= self.args.batch_time > 0
                    r = handle_one(e, self.args.batch_time if late else None)
                    if r is not None:
                        response.append(r)
                if not response:
                    return                      # only notifications
        else:
            response = handle_one(value)
            if response is None:
                return                          # notification
            key = reply_key(value)
        if key is None:
            self.dead_letter("no reply key", text_bytes, response)
        else:
            self.reply(key, response, text_bytes)

    def run(self):
        while not self.stopping:
            item = self.r.blpop([self.queue], timeout=1)
            if item is not None:
                self.handle(item[1])


def main():
    ap = argparse.ArgumentParser(description="Reference single-threaded rrpc calc worker.")
    ap.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    ap.add_argument("--service", default="calc")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--ttl", type=int, default=60)
    ap.add_argument("--max-bytes", type=int, default=1048576)
    ap.add_argument("--batch-max", type=int, default=1000)
    ap.add_argument("--dead-max", type=int, default=1000)
    ap.add_argument("--batch-time", type=float, default=5.0, help="0: no limit")
    ap.add_argument("--reply-prefix", action="append", default=None)
    args = ap.parse_args()
    w = Worker(args)

    def stop(*_):
        w.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    w.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
