"""rrpc.examples -- the calc example service and its client (python3 -m rrpc.examples.calc_server)."""
