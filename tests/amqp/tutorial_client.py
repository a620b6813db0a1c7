#!/usr/bin/env python3
"""tutorial_client.py -- a caller written only from RabbitMQ's RPC tutorial
(https://www.rabbitmq.com/tutorials/tutorial-six-python): an exclusive
callback queue, reply_to and a fresh correlation_id per call, nothing of
rrpc's.  The body is whatever it is given, sent as is (a JSON-RPC envelope,
or text that is not JSON at all); it prints the answer's body.

Usage: tutorial_client.py AMQP_URL QUEUE BODY [TIMEOUT_S]
Exit status 0 with the body printed, 2 if no answer came in time.
"""
import sys
import uuid

import pika


class RpcClient:
    def __init__(self, url):
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(queue=self.callback_queue,
                                   on_message_callback=self.on_response, auto_ack=True)
        self.response = None
        self.corr_id = None

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body

    def call(self, queue, body, timeout_s):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange="", routing_key=queue,
            properties=pika.BasicProperties(reply_to=self.callback_queue,
                                            correlation_id=self.corr_id),
            body=body)
        self.connection.process_data_events(time_limit=0)
        waited = 0.0
        while self.response is None and waited < timeout_s:
            self.connection.process_data_events(time_limit=0.1)
            waited += 0.1
        return self.response


def main():
    url, queue, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    timeout_s = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    client = RpcClient(url)
    response = client.call(queue, body, timeout_s)
    client.connection.close()
    if response is None:
        print("no answer", file=sys.stderr)
        return 2
    print(response.decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
