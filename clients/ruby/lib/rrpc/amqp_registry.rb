# frozen_string_literal: true

require 'socket'

# amqp_registry.rb -- an AMQP server's presence: it answers registry
# queries (PROTOCOL.md section 12, "Operations over AMQP").  RabbitMQ keeps
# no record for rrpc without its management plugin, so the registry is a
# question: the server binds an exclusive, auto-delete queue of its own,
# <prefix>rrpc:registry:<worker id>, to the direct exchange
# <prefix>rrpc:registry with its service's routing key and the empty one,
# and answers each query with its record (section 9), its per-method
# totals (mstats), its counters and its clock, at the query's reply_to.
# The queue lives as long as the connection: a stopped or killed server
# leaves `rrpc ls` at once.  As the C server (src/amqp/registry_amqp.c):
# a session of its own, so a slow handler never keeps a query waiting; a
# broker that refuses the names (permissions) leaves the server serving
# unregistered, said once; a link lost later is mended (bunny's recovery
# declares the queue, bindings and consumer again).
module RRPC
  module AMQP
    # Internal: answers "who is there" for one AMQP::Server.
    class Registry
      NAME = 'rrpc:registry'
      COUNTERS = %w[requests notifications errors expired dead_letters redelivered given_back lost].freeze
      RETRY_S = [0.2, 5.0].freeze

      attr_reader :id, :stats

      # counts: a callable giving the server's counters (a Hash with every COUNTERS key).
      def initialize(service:, url:, prefix:, id:, interval:, ttl:, counts:, logger:)
        @service = service
        @url = url
        @id = id
        @exchange = "#{prefix}#{NAME}"
        @queue = "#{@exchange}:#{id}"
        @interval = interval.to_f.positive? ? interval.to_f : 1.0
        ttl = ttl.to_f.positive? ? ttl.to_f : 5.0
        @ttl = [ttl, 2 * @interval].max # as the Redis record says
        @counts = counts
        @log = logger
        @stats = Stats.new # never flushed: its counts are the process's totals
        @stop = false
      end

      # Builds the record and joins the registry; false (logged) if the
      # broker refuses its names: the server then serves unregistered.
      def start(version:, methods:)
        @record = { 'id' => @id, 'service' => @service, 'host' => Socket.gethostname, 'pid' => Process.pid,
                    'version' => version, 'threads' => 1, 'started' => Time.now.to_f, 'heartbeat_s' => @interval,
                    'ttl_s' => @ttl, 'max_queue' => 0, 'shards' => 1, 'methods' => methods }
        # The first try runs here, so that a refusal is said at start.
        join
        true
      rescue BrokerError, Bunny::Exception => e
        close
        return refused(e) if refusal?(e)

        @log.warn("#{@service}: registry: #{e.message}; trying again")
        @retry = Thread.new { join_later }
        true
      end

      # Stops answering; closing the session takes the queue away.
      def stop
        @stop = true
        @retry&.join
        close
      end

      # The answer to a query: the record with mstats, counters and time.
      def answer
        Wire.generate(@record.merge('mstats' => @stats.totals, 'counters' => @counts.call.slice(*COUNTERS),
                                    'time' => Time.now.to_f))
      end

      private

      def join
        @session = AMQP.connect(@url)
        channel = @session.create_channel
        exchange = channel.direct(@exchange) # not durable, not auto-delete: as every server declares it
        queue = channel.queue(@queue, exclusive: true, auto_delete: true)
        [@service, ''].each { |key| queue.bind(exchange, routing_key: key) } # its service's queries, everyone's
        queue.subscribe { |_info, props, _body| reply(channel, props) }
      end

      def reply(channel, props)
        return if props.reply_to.nil? || props.reply_to.empty? # nobody to answer

        channel.default_exchange.publish(answer, routing_key: props.reply_to, correlation_id: props.correlation_id,
                                                 content_type: JSON_TYPE)
      rescue StandardError => e
        @log.warn("#{@service}: registry answer lost: #{e.class}: #{e.message}")
      end

      # The broker is away at start: tried again with backoff until it
      # works or the server stops.
      def join_later
        delay = RETRY_S[0]
        until @stop
          nap(delay)
          begin
            unless @stop
              join
              return @log.info("#{@service}: registry: joined")
            end
          rescue BrokerError, Bunny::Exception => e
            close
            return refused(e) if refusal?(e)
          end
          delay = [delay * 2, RETRY_S[1]].min
        end
      end

      # Sleeps SECONDS, or less once told to stop.
      def nap(seconds)
        finish = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
        sleep 0.05 until @stop || Process.clock_gettime(Process::CLOCK_MONOTONIC) >= finish
      end

      # A refused login, or the broker closing the channel on a declare or
      # bind (ACCESS_REFUSED, PRECONDITION_FAILED): trying again would not help.
      def refusal?(error)
        error.is_a?(Bunny::ChannelLevelException) || error.is_a?(Bunny::AccessRefused) ||
          (error.is_a?(BrokerError) && AMQP.refused?(error))
      end

      def refused(error)
        @log.warn("#{@service}: not in the registry (rrpc ls/info/stats cannot see this server): #{error.message}")
        false
      end

      def close
        session = @session
        @session = nil
        session&.close
      rescue StandardError
        nil
      end
    end
  end
end
