#!/usr/bin/env python3
"""amqp_tool.py -- what test_amqp_reliable.sh asks of the broker directly,
with pika (nothing of rrpc's):

  amqp_tool.py URL dead QUEUE           prints each message of QUEUE (taken,
                                        acked) as "<x-rrpc-reason or
                                        x-death reason>\t<body>"
  amqp_tool.py URL publish QUEUE BODY [N]
                                        publishes BODY without reply_to (a
                                        notification), persistent; N times,
                                        20 ms apart
  amqp_tool.py URL confirm QUEUE BODY N
                                        publishes N notifications BODY (each
                                        "{i}" in it replaced by 0..N-1),
                                        persistent, with publisher confirms;
                                        prints how many the broker confirmed
  amqp_tool.py URL call QUEUE BODY CORR [TIMEOUT]
                                        a tutorial-style call with the
                                        correlation_id CORR; prints the answer
  amqp_tool.py URL declare QUEUE        declares QUEUE plainly (as a tutorial
                                        worker does); prints ok or the error
  amqp_tool.py URL count QUEUE          prints "<messages> <consumers>"
"""
import sys
import time

import pika


def reason_of(props):
    h = props.headers or {}
    if "x-rrpc-reason" in h:
        r = h["x-rrpc-reason"]
        return r.decode() if isinstance(r, bytes) else r
    death = h.get("x-death") or [{}]
    r = death[0].get("reason", "?")
    return "x-death " + (r.decode() if isinstance(r, bytes) else r)


def main():
    url, cmd, queue = sys.argv[1], sys.argv[2], sys.argv[3]
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    if cmd == "dead":
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                break
            print("%s\t%s" % (reason_of(props), body.decode(errors="replace")))
    elif cmd == "publish":
        for i in range(int(sys.argv[5]) if len(sys.argv) > 5 else 1):
            if i > 0:
                time.sleep(0.02)  # the broker delivers the previous one first
            ch.basic_publish("", queue, sys.argv[4].encode(),
                             pika.BasicProperties(delivery_mode=2, content_type="application/json"))
    elif cmd == "confirm":
        ch.confirm_delivery()  # basic_publish returns once the broker confirmed
        confirmed = 0
        for i in range(int(sys.argv[5])):
            ch.basic_publish("", queue, sys.argv[4].replace("{i}", str(i)).encode(),
                             pika.BasicProperties(delivery_mode=2,
                                                  content_type="application/json"))
            confirmed += 1
        print(confirmed)
    elif cmd == "call":
        cb = ch.queue_declare(queue="", exclusive=True).method.queue
        got = []
        ch.basic_consume(cb, lambda c, m, p, b: got.append(b) if p.correlation_id == sys.argv[5]
                         else None, auto_ack=True)
        ch.basic_publish("", queue, sys.argv[4].encode(),
                         pika.BasicProperties(reply_to=cb, correlation_id=sys.argv[5]))
        waited, limit = 0.0, float(sys.argv[6]) if len(sys.argv) > 6 else 5.0
        while not got and waited < limit:
            conn.process_data_events(time_limit=0.1)
            waited += 0.1
        if not got:
            print("no answer")
            return 2
        print(got[0].decode())
    elif cmd == "declare":
        try:
            ch.queue_declare(queue=queue)
            print("ok")
        except pika.exceptions.ChannelClosedByBroker as e:
            print("refused: %s %s" % (e.reply_code, e.reply_text))
    elif cmd == "count":
        q = ch.queue_declare(queue=queue, passive=True).method
        print("%d %d" % (q.message_count, q.consumer_count))
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
