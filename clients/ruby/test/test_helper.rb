# frozen_string_literal: true

# test_helper.rb -- what every test of the rrpc gem shares: the gem (from
# the checkout with `-I lib`, or installed: test_gem.sh runs the installed
# copy of these tests and sets RRPC_EXPECT_LIB to check which one loaded),
# the private redis-server of tests/harness/with-redis.sh ($REDIS_URL),
# servers run in threads, and redis-servers of a test's own.
require 'minitest/autorun'
require 'rrpc'
require 'fileutils'
require 'logger'
require 'securerandom'
require 'stringio'
require 'tmpdir'
require_relative '../examples/calc_server' # the Calc handler; defines nothing else when required

loaded = $LOADED_FEATURES.find { |f| f.end_with?('/lib/rrpc.rb') }
expect_lib = ENV.fetch('RRPC_EXPECT_LIB', nil)
if expect_lib && !loaded&.start_with?(File.join(expect_lib, ''))
  abort "test_helper.rb: rrpc was loaded from #{loaded.inspect}, not from #{expect_lib}"
end

module RRPCTest
  REDIS_URL = ENV.fetch('REDIS_URL') do
    abort 'test_helper.rb: REDIS_URL is not set; run the tests under tests/harness/with-redis.sh'
  end

  # Helpers for a Minitest::Test.
  module Helpers
    def setup
      @redis = Redis.new(url: REDIS_URL)
      @servers = []
      @children = []
      @dirs = []
    end

    def teardown
      @servers.each { |server, _thread| server.stop }
      @servers.each { |_server, thread| thread.join(10) }
      @children.each do |pid|
        Process.kill('KILL', pid)
        Process.wait(pid)
      rescue Errno::ESRCH, Errno::ECHILD
        nil
      end
      @dirs.each { |dir| FileUtils.rm_rf(dir) }
      @redis.close
    end

    def unique(name)
      "t#{name}#{SecureRandom.hex(4)}"
    end

    # A server of obj under a fresh service name, serving in a thread.
    # Returns [service, server, log (a StringIO)].
    def serve(obj = Calc.new, service: unique('svc'), **opts)
      log = StringIO.new
      opts = { url: REDIS_URL, heartbeat: false, logger: Logger.new(log) }.merge(opts)
      server = RRPC::Server.new(service, obj, **opts)
      thread = Thread.new do
        server.serve_forever
      rescue StandardError => e
        e # the test reads it from thread.value
      end
      @servers << [server, thread]
      [service, server, log, thread]
    end

    def client(**opts)
      RRPC::Client.new(url: REDIS_URL, timeout: 10, **opts)
    end

    # Pushes a raw message onto service's list.
    def push(service, text)
      @redis.rpush(service, text)
    end

    # The next dead letter of service, parsed, or nil after timeout s.
    def dead_letter(service, timeout: 10)
      _key, text = @redis.blpop("#{service}:dead", timeout: timeout)
      text && JSON.parse(text)
    end

    # The reply on key, parsed, or nil after timeout s.
    def reply(key, timeout: 10)
      _key, text = @redis.blpop(key, timeout: timeout)
      text && JSON.parse(text)
    end

    # A socket path in a fresh temp dir, where no Redis listens until the
    # test starts one there (start_redis); its URL is unix://PATH.
    def redis_socket_path
      dir = Dir.mktmpdir('rrpc-test')
      @dirs << dir
      File.join(dir, 'redis.sock')
    end

    # A redis-server of the test's own on sock, without persistence,
    # killed at teardown.
    def start_redis(sock, *args)
      pid = Process.spawn('redis-server', '--port', '0', '--unixsocket', sock, '--save', '',
                          '--appendonly', 'no', '--dir', File.dirname(sock), *args,
                          out: File::NULL, err: File::NULL)
      @children << pid
      pid
    end

    def wait_until(timeout = 10)
      finish = monotonic + timeout
      until yield
        return false if monotonic > finish

        sleep 0.02
      end
      true
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
