"""rrpc.examples -- the calc example service and its client.

    python3 -m rrpc.examples.calc_server --redis URL --service NAME
    python3 -m rrpc.examples.calc_client --redis URL --service NAME
"""
