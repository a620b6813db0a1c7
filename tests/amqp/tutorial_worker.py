#!/usr/bin/env python3
"""tutorial_worker.py -- a worker written only from RabbitMQ's RPC tutorial
(https://www.rabbitmq.com/tutorials/tutorial-six-python), speaking JSON-RPC
in its bodies: it declares its queue plainly (queue_declare(queue=name), no
arguments of rrpc's), takes one message at a time (prefetch 1), answers to
reply_to with the request's correlation_id and acks.  Its one method, fib,
returns the N-th Fibonacci number.

Usage: tutorial_worker.py AMQP_URL QUEUE   (prints "ready" once consuming)
"""
import json
import sys

import pika


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def main():
    url, queue = sys.argv[1], sys.argv[2]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue=queue)

    def on_request(ch, method, props, body):
        req = json.loads(body)
        print("got", req.get("method"), req.get("params"), flush=True)
        if req.get("method") == "fib":
            reply = {"jsonrpc": "2.0", "id": req.get("id"), "result": fib(req["params"][0])}
        else:
            reply = {"jsonrpc": "2.0", "id": req.get("id"),
                     "error": {"code": -32601, "message": "Method not found"}}
        ch.basic_publish(exchange="", routing_key=props.reply_to,
                         properties=pika.BasicProperties(correlation_id=props.correlation_id),
                         body=json.dumps(reply))
        ch.basic_ack(delivery_tag=method.delivery_tag)

    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue=queue, on_message_callback=on_request)
    print("ready", flush=True)
    channel.start_consuming()


if __name__ == "__main__":
    main()
