#!/usr/bin/env ruby
# seed_client.rb -- a calc caller written the way the original "RPC using Redis"
# post did it, knowing nothing of rrpc: a random hex id that is also the reply
# list, no reply_to.  It proves rrpc's workers still serve such old-style peers.
require 'redis'; require 'json'; require 'securerandom'; require 'optparse'

opts = { redis: ENV['REDIS_URL'] || 'redis://127.0.0.1:6379', service: 'calc' }
OptionParser.new { |o| o.on('--redis URL') { |v| opts[:redis] = v }; o.on('--service NAME') { |v| opts[:service] = v } }.parse!
r = Redis.new(url: opts[:redis])
wrong = 0
{ ['add', [1, 2]] => 3, ['subtract', [5, 3]] => 2, ['multiply', [4, 2.5]] => 10.0, ['divide', [7, 2]] => 3.5 }.each do |(method, params), expected|
  id = SecureRandom.hex(16)
  r.rpush(opts[:service], JSON.generate(jsonrpc: '2.0', method: method, params: params, id: id))
  _key, text = r.blpop(id, timeout: 5)
  result = text && JSON.parse(text)['result']
  puts "#{method}(#{params.join(', ')}) = #{result.inspect}"
  wrong += 1 unless result == expected
end
exit(wrong.zero? ? 0 : 1)
