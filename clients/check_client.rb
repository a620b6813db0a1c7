#!/usr/bin/env ruby
# frozen_string_literal: true

# check_client.rb -- checks RRPC::Client (clients/ruby, the rrpc gem) against a
# running calc worker of any language: results, error classes and codes,
# notifications, timeouts.  The Ruby counterpart of check_protocol.py
# --client; run by clients/test_peers.sh, exits 1 if any check fails.
#
#   ruby check_client.rb --service NAME [--redis URL]

require 'optparse'
require_relative 'ruby/lib/rrpc'

opts = { redis: ENV['REDIS_URL'], service: nil }
OptionParser.new do |o|
  o.on('--redis URL') { |v| opts[:redis] = v }
  o.on('--service NAME') { |v| opts[:service] = v }
end.parse!
abort 'check_client.rb: --service is required' unless opts[:service]

$failures = 0
def check(label, ok, detail = nil)
  puts(ok ? "ok   #{label}" : "FAIL #{label}: #{detail.inspect}")
  $failures += 1 unless ok
end

client = RRPC::Client.new(url: opts[:redis], timeout: 5)
calc = client.proxy(opts[:service])
check('Ruby client: proxy add', calc.add(1, 2) == 3)
check('Ruby client: named params', client.call(opts[:service], 'subtract', a: 5, b: 3) == 2)
check('Ruby client: echo keeps a hash positional', calc.echo({ 'k' => [1] }) == [{ 'k' => [1] }])
check('Ruby client: sleep reaches the service, not Kernel#sleep', calc.sleep(1) == 1)
check('Ruby client: divide is a float', calc.divide(6, 3).eql?(2.0))
[['divide by zero', -> { calc.divide(1, 0) }, 1],
 ['unknown method', -> { calc.nosuch(1) }, -32_601],
 ['bad params', -> { calc.add('x', 1) }, -32_602],
 ['too many params', -> { calc.add(1, 2, 3) }, -32_602]].each do |label, fn, code|
  fn.call
  check("Ruby client: #{label} raises RemoteError", false, 'no exception')
rescue RRPC::RemoteError => e
  check("Ruby client: #{label} raises RemoteError #{code}", e.code == code, e.code)
end
before = client.redis.keys('*').sort
client.notify(opts[:service], 'add', 1, 2)
check('Ruby client: notify leaves no key', calc.add(0, 0).zero? && client.redis.keys('*').sort == before)
nobody = "check:nobody:#{SecureRandom.hex(4)}"
start = Time.now
begin
  client.call(nobody, 'add', 1, 2, timeout: 0.3)
  check('Ruby client: timeout raises RRPC::Timeout', false, 'no exception')
rescue RRPC::Timeout
  check('Ruby client: timeout raises RRPC::Timeout and withdraws the request',
        Time.now - start < 2 && client.redis.llen(nobody).zero?)
end
begin
  client.call(opts[:service], 'add', 1, b: 2)
  check('Ruby client: mixing positional and named params is refused', false)
rescue ArgumentError
  check('Ruby client: mixing positional and named params is refused', true)
end
puts "#{$failures} check(s) failed against #{opts[:service]}" unless $failures.zero?
exit($failures.zero? ? 0 : 1)
