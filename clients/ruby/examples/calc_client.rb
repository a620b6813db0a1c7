#!/usr/bin/env ruby
# frozen_string_literal: true

# calc_client.rb -- calls the calc service from Ruby and checks the answers.
#
# A usage example of RRPC::Client and a smoke test of any calc server (C,
# Ruby, Python or seed-style): exits 1 if any answer is wrong.
# clients/ruby/calc_client.rb runs it from a checkout.
#
#   ruby calc_client.rb [--redis URL] [--service calc] [--prefix P] [--timeout S]

require 'optparse'
require_relative '../lib/rrpc' # an application installs the gem and writes: require 'rrpc'

# The command line of calc_client.rb.
module CalcClient
  module_function

  # The number of wrong answers.
  def main(argv)
    opts = { redis: nil, service: 'calc', prefix: '', timeout: 5 }
    OptionParser.new do |o|
      o.banner = 'usage: calc_client.rb [--redis URL] [--service NAME] [--prefix P] [--timeout S]'
      o.on('--redis URL', '--url URL', 'Redis URL, or amqp://user:pass@host:port/vhost for RabbitMQ ' \
                                       '(default $RRPC_URL, then $REDIS_URL, then redis://127.0.0.1:6379)') do |v|
        opts[:redis] = v
      end
      o.on('--service NAME', 'service name (default calc)') { |v| opts[:service] = v }
      o.on('--prefix P', 'key prefix (default none)') { |v| opts[:prefix] = v }
      o.on('--timeout S', Float, 'seconds to wait for each reply (default 5)') { |v| opts[:timeout] = v }
    end.parse!(argv)

    calc = RRPC::Client.new(url: opts[:redis], prefix: opts[:prefix], timeout: opts[:timeout]).proxy(opts[:service])
    wrong = 0
    [
      ['add(1, 2)', -> { calc.add(1, 2) }, 3],
      ['subtract(a: 5, b: 3)', -> { calc.subtract(a: 5, b: 3) }, 2],
      ['multiply(4, 2.5)', -> { calc.multiply(4, 2.5) }, 10.0],
      ['divide(7, 2)', -> { calc.divide(7, 2) }, 3.5]
    ].each do |label, call, expected|
      got = call.call
      # 10.0 == 10 in Ruby; the JSON type matters too.
      ok = got == expected && got.class == expected.class
      wrong += 1 unless ok
      puts "#{label} = #{got.inspect}#{ok ? '' : "  WRONG, expected #{expected.inspect}"}"
    rescue RRPC::Error => e
      wrong += 1
      puts "#{label} failed: #{e.message}  WRONG, expected #{expected.inspect}"
    end
    begin
      got = calc.divide(1, 0)
      wrong += 1
      puts "divide(1, 0) = #{got.inspect}  WRONG, expected an error"
    rescue RRPC::RemoteError => e
      wrong += 1 unless e.code == 1
      puts "divide(1, 0) failed: #{e.message} (code #{e.code})"
    rescue RRPC::Error => e
      wrong += 1
      puts "divide(1, 0) failed: #{e.message}  WRONG, expected error code 1"
    end
    wrong
  end
end

exit(CalcClient.main(ARGV).zero? ? 0 : 1) if $PROGRAM_NAME == __FILE__
