# frozen_string_literal: true

require 'redis'
require 'uri'

# redis_url.rb -- the Redis URLs rrpc takes, and a redis-rb client for each.
#
# The same forms as the C library (src/core/url.c, README "Scaling out"):
#
#   redis://[[user]:password@]host[:port][/db]      (and unix://, rediss://: redis-rb's own)
#   redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]
#       [?sentinel_password=P][&sentinel_user=U]
#   redis+cluster://[[user]:password@]host[:port][,host[:port]...][/]
#
# Sentinel hosts default to port 26379 and cluster seeds to 6379; user,
# password and db are the master's (a Cluster has db 0 only), the
# sentinel_ ones the Sentinels' own.  User and password may be
# percent-encoded; the userinfo ends at the last '@' before the path, as in
# C, so that a password with an unencoded '@' never becomes a host name in a
# message.
#
# A Sentinel URL gives redis-rb's Sentinel client (role: :master): every
# (re)connect asks the Sentinels for the master and checks ROLE; a demoted
# master's READONLY or UNBLOCKED is turned into a lost link by the peer
# (RedisURL.demoted), so a worker blocked on the old master lands on the
# promoted one.  A Cluster URL gives redis-rb's Cluster client, made on
# first use (so that a server can wait for the Cluster at start as it waits
# for one Redis), which routes each command by its key's slot and follows
# MOVED and ASK; its pipelines must stay on one node.
module RRPC
  # Internal.
  module RedisURL
    SENTINEL_PORT = 26_379
    CLUSTER_PORT = 6379
    ENCODE_HINT = "percent-encode '@', ':', '/', '?' and '#' in a user name or password " \
                  '(%40, %3A, %2F, %3F, %23)'

    # A redis+sentinel:// or redis+cluster:// URL, parsed.
    Parsed = Struct.new(:kind, :nodes, :master, :db, :user, :password, :sentinel_user, :sentinel_password)

    module_function

    # The Parsed form of a redis+sentinel:// or redis+cluster:// URL, or nil
    # for any other URL; ArgumentError (saying what is wrong, quoting no
    # password) for a malformed one.
    def parse(url)
      scheme, sep, rest = url.partition('://')
      kind = { 'redis+sentinel' => :sentinel, 'redis+cluster' => :cluster }[scheme.downcase]
      return nil if sep.empty? || kind.nil?

      parsed = Parsed.new(kind, [], nil, 0)
      rest, _, query = rest.partition('?')
      nodes, slash, path = rest.partition('/')
      userinfo(parsed, nodes[0, nodes.rindex('@')]) if nodes.include?('@')
      nodes = nodes[(nodes.rindex('@') || -1) + 1..]
      raise fail("unexpected '@' after the URL's host: #{ENCODE_HINT}") if path.include?('@')

      default_port = kind == :sentinel ? SENTINEL_PORT : CLUSTER_PORT
      nodes.split(',', -1).each do |item|
        raise fail("empty host in the URL's node list") if item.empty?

        parsed.nodes << host_port(item, default_port)
      end
      path(parsed, path, !slash.empty?)
      query(parsed, query)
      raise fail('a Redis Cluster has only db 0') if kind == :cluster && parsed.db != 0

      parsed
    end

    # A redis-rb client for URL (already resolved): Sentinel-managed,
    # Cluster or plain.
    def connect(url)
      parsed = parse(url)
      return Redis.new(url: url) if parsed.nil?
      return LazyCluster.new(parsed) if parsed.kind == :cluster

      sentinels = parsed.nodes.map do |host, port|
        { host: host, port: port, username: parsed.sentinel_user, password: parsed.sentinel_password }
      end
      # url: names the master (redis-rb's idiom) and keeps $REDIS_URL from
      # filling in what the URL leaves out.
      Redis.new(url: "redis://#{URI.encode_www_form_component(parsed.master)}", sentinels: sentinels,
                role: :master, db: parsed.db, username: parsed.user, password: parsed.password)
    end

    # Whether REDIS is a Cluster client (its pipelines must stay on one node).
    def cluster?(redis)
      redis.is_a?(LazyCluster)
    end

    # A demoted master answers writes with READONLY and cuts blocked pops
    # with UNBLOCKED: on a Sentinel URL that is a lost link (as in C), so
    # the connection is dropped and the next command asks the Sentinels
    # again.  Elsewhere the reconnect is to the same node: harmless.
    def demoted(redis, error)
      return unless error.is_a?(Redis::CommandError) && error.message.start_with?('READONLY', 'UNBLOCKED')

      redis.close
    rescue StandardError
      nil
    end

    def fail(why)
      ArgumentError.new("rrpc: #{why}")
    end

    def decode(text)
      URI.decode_www_form_component(text.gsub('+', '%2B'))
    rescue ArgumentError
      text
    end

    # "[user]:password" (a lone userinfo is the password, as redis-rb reads it).
    def userinfo(parsed, info)
      user, colon, password = info.partition(':')
      if colon.empty?
        parsed.password = decode(user)
      else
        parsed.user = user.empty? ? nil : decode(user)
        parsed.password = decode(password)
      end
    end

    def host_port(item, default_port)
      if item.start_with?('[') # an IPv6 literal
        close = item.index(']') or raise fail("unterminated '[' in URL host")
        host = item[1...close]
        rest = item[close + 1..]
        raise fail("unexpected text after ']' in URL host") unless rest.empty? || rest.start_with?(':')

        port = rest.empty? ? nil : rest[1..]
      else
        host, colon, port = item.partition(':')
        port = nil if colon.empty?
      end
      host = decode(host)
      [host.empty? ? '127.0.0.1' : host, port.nil? ? default_port : int(port, 1, 65_535, 'bad port in URL')]
    end

    def int(text, low, high, why)
      raise fail(why) unless text.match?(/\A\d{1,9}\z/) && text.to_i.between?(low, high)

      text.to_i
    end

    # A Sentinel URL's "MASTER[/db]"; a Cluster URL's "" or "0".
    def path(parsed, path, slash)
      if parsed.kind == :cluster
        raise fail('a Redis Cluster has only db 0') unless path.empty? || path == '0'

        return
      end
      name, _, db = path.partition('/')
      raise fail("Sentinel URL needs the master's name: redis+sentinel://host/NAME") if !slash || name.empty?

      parsed.master = decode(name)
      parsed.db = int(db, 0, 1 << 20, 'bad db number in URL') unless db.empty?
    end

    def query(parsed, query)
      query.split('&').reject(&:empty?).each do |item|
        name, eq, value = item.partition('=')
        raise fail("query item without '=' in URL") if eq.empty?

        case name
        when 'db' then parsed.db = int(value, 0, 1 << 20, 'bad db number in URL')
        when 'password', 'user' then parsed[name.to_sym] = decode(value)
        when 'sentinel_password', 'sentinel_user'
          raise fail("unknown URL parameter '#{name}'") unless parsed.kind == :sentinel

          parsed[name.to_sym] = decode(value)
        else
          # The tail of a password cut at an unencoded '?': quote none of it.
          raise fail("unexpected '@' in the URL's query: #{ENCODE_HINT}") if item.include?('@')

          raise fail("unknown URL parameter '#{name}'")
        end
      end
    end

    # redis-rb's Cluster client, made on first use: Redis.new(cluster:)
    # reads the slot map when it is made, and a server must be able to
    # start before its Cluster answers (it waits, as for one Redis).  A
    # Cluster none of whose seeds answers is a Redis::CannotConnectError,
    # which callers already ride out.  Thread-safe as a Redis is.
    class LazyCluster
      def initialize(parsed)
        @parsed = parsed
        @redis = nil
        @mu = Mutex.new
      end

      def close
        @mu.synchronize { @redis&.close }
      end

      def method_missing(name, *args, **kwargs, &block)
        redis.public_send(name, *args, **kwargs, &block)
      end

      def respond_to_missing?(name, include_private = false)
        Redis.method_defined?(name) || super
      end

      private

      def redis
        @mu.synchronize { @redis ||= build }
      end

      def bracketed(host)
        host.include?(':') ? "[#{host}]" : host
      end

      def build
        p = @parsed
        # url: the first seed, which keeps $REDIS_URL from filling in what
        # the URL leaves out.
        Redis.new(cluster: p.nodes.map { |host, port| { host: host, port: port } },
                  url: "redis://#{bracketed(p.nodes[0][0])}:#{p.nodes[0][1]}", username: p.user, password: p.password)
      rescue Redis::Cluster::InitialSetupError, Redis::BaseConnectionError => e
        seeds = p.nodes.map { |host, port| "#{host}:#{port}" }.join(',')
        raise Redis::CannotConnectError, "no Redis Cluster node answers at #{seeds}: #{e.message}"
      end
    end
  end
  private_constant :RedisURL
end
