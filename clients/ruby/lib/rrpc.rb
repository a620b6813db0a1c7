# frozen_string_literal: true

# rrpc.rb -- the Ruby peer of rrpc: JSON-RPC 2.0 over Redis lists.
#
# rrpc's core is C, but the protocol (docs/PROTOCOL.md) is meant to be spoken
# by any language with a Redis client.  This is that peer for Ruby, built only
# on the redis gem, so Ruby programs can call rrpc services and serve them,
# interchangeably with the C, Python and seed-style peers:
#
#   calc = RRPC::Client.new.proxy('calc')
#   calc.add(1, 2)                      # => 3
#
#   class Calc
#     def add(a, b) = a + b
#   end
#   RRPC::Server.new('calc', Calc.new).serve_forever
#
# Servers register themselves in the registry of PROTOCOL.md section 9 (a
# heartbeat from a background thread, per-method stats, the built-in
# rpc.ping), so `rrpc ls/info/ping/stats/top` show them next to C workers and
# C callers fail fast once the last of them stops; they refuse requests whose
# deadline (section 7) has passed, and write replies only onto reply lists
# (section 6: never onto rrpc's keys, a service's request list or an
# application's key).  They survive whatever a handler raises and whatever
# Redis answers, and stop only when told to.  Clients, like the C client, put
# a deadline on every call and read the registry to fail fast when a
# registered service has no live worker, and to respect its max_queue.
#
# Public API: RRPC::Client (and its proxy), RRPC::Server, RRPC::Handler, the
# errors under RRPC::Error (errors.rb), RRPC::VERSION.  Layers, each file
# using only those above it:
#
#   version, errors, protocol (wire rules), handler,
#   trace (W3C Trace Context)                          -- no I/O
#   redis_url (Sentinel and Cluster clients),
#   clock, dead_letter, params                         -- helpers
#   client                                             -- callers
#   registry, outage, dispatcher, replies, server      -- workers
#   amqp (the AMQP transport, PROTOCOL.md 12)         -- both, over RabbitMQ

require 'digest'
require_relative 'rrpc/version'
require_relative 'rrpc/redis_url'
require_relative 'rrpc/protocol'
require_relative 'rrpc/errors'
require_relative 'rrpc/handler'
require_relative 'rrpc/trace'
require_relative 'rrpc/priority'
require_relative 'rrpc/stream'
require_relative 'rrpc/clock'
require_relative 'rrpc/dead_letter'
require_relative 'rrpc/params'
require_relative 'rrpc/client'
require_relative 'rrpc/registry'
require_relative 'rrpc/outage'
require_relative 'rrpc/dispatcher'
require_relative 'rrpc/replies'
require_relative 'rrpc/server'
require_relative 'rrpc/amqp'
require_relative 'rrpc/amqp_registry'
