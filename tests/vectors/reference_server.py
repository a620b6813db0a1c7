#!/usr/bin/python3
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
#                            [--dead-max 1000]
# URL defaults to $REDIS_URL, then redis://127.0.0.1:6379.  Stops on SIGINT/SIGTERM.
import argparse
import base64
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


def reply_key(obj):
    """Section 3: the reply key of a request object, or None."""
    if not isinstance(obj, dict):
        return None
    rt = obj.get("reply_to")
    if isinstance(rt, str) and rt != "":
        return rt
    if "id" not in obj:
        return None
    i = obj["id"]
    if isinstance(i, str):
        return i
    if isinstance(i, bool):
        return None
    if isinstance(i, int):
        return str(i)
    if isinstance(i, float) and math.isfinite(i):
        return repr(i)
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


def handle_one(obj):
    """Runs one request object.  Returns the response, or None for a notification."""
    problem, id_ = check(obj)
    if problem:
        return error_response(-32600, "invalid request: " + problem, id_)
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

    def count(self, field, n=1):
        self.r.hincrby(self.stats, field, n)

    def dead_letter(self, reason, text_bytes, response=None):
        entry = {"reason": reason, "time": time.time(), "service": self.args.service}
        try:
            entry["message"] = text_bytes.decode("utf-8")
        except UnicodeDecodeError:                  # not a JSON string: kept byte for byte
            entry["message_base64"] = base64.b64encode(text_bytes).decode("ascii")
        if response is not None:
            entry["response"] = response
        p = self.r.pipeline(transaction=False)
        p.rpush(self.dead, json.dumps(entry, ensure_ascii=True))
        p.ltrim(self.dead, -self.args.dead_max, -1)
        p.hincrby(self.stats, "dead", 1)
        p.execute()

    def reply(self, key, response, text_bytes):
        out = json.dumps(response, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        try:
            p = self.r.pipeline(transaction=False)
            p.rpush(key, out)
            p.expire(key, self.args.ttl)
            p.execute()
        except redis.ResponseError as e:
            self.dead_letter("reply failed: %s" % e, text_bytes, response)

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
            # Section 5: the reply key of the first element that has one; notifications
            # have none (section 3 applies to requests that are not notifications).
            key = next((k for k in (reply_key(e) for e in value if not is_notification(e))
                        if k is not None), None)
            if not value:
                response = error_response(-32600, "invalid request: empty batch", None)
            elif len(value) > self.args.batch_max:
                response = error_response(-32600, "invalid request: batch of %d elements "
                                          "(limit %d)" % (len(value), self.args.batch_max), None)
            else:
                response = [r for r in (handle_one(e) for e in value) if r is not None]
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
