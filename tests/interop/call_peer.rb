#!/usr/bin/env ruby
# frozen_string_literal: true

# call_peer.rb -- one call from the Ruby peer, for the interop tests: prints
# each progress value as one JSON line as it comes (--stream), then the
# result, as `rrpc call --stream` does.
#
# Usage: call_peer.rb [--priority P] [--stream] [--timeout S] SERVICE METHOD PARAMS_JSON
require 'optparse'
require_relative '../../clients/ruby/lib/rrpc'

opts = { timeout: 30 }
OptionParser.new do |o|
  o.on('--priority P') { |v| opts[:priority] = v }
  o.on('--stream') { opts[:stream] = true }
  o.on('--timeout S', Float) { |v| opts[:timeout] = v }
end.parse!(ARGV)
service, method, params = ARGV
$stdout.sync = true
show = opts[:stream] ? ->(v) { puts JSON.generate(v) } : nil
client = RRPC::Client.new(timeout: opts[:timeout])
begin
  puts JSON.generate(client.call(service, method, *JSON.parse(params), priority: opts[:priority], progress: show))
rescue RRPC::RemoteError => e
  abort "error #{e.code}: #{e.message}"
end
