# frozen_string_literal: true

require 'logger'
require 'securerandom'
require 'socket'

# amqp.rb -- rrpc over an AMQP 0-9-1 broker (RabbitMQ), PROTOCOL.md section
# 12: RRPC::Client.new and RRPC::Server.new hand out these when the URL is
# amqp://.  A service is a queue on the default exchange; calls are
# published mandatory with reply_to = direct reply-to, a fresh
# correlation_id and the timeout as expiration.  Workers declare the
# service's queue as the C server does for the same options (plain;
# durable with rrpc's dead-letter arguments when reliable; x-max-length
# with reject-publish for max_queue), so C and Ruby workers can serve one
# queue; at most once they ack on receipt and file a redelivered message as
# a dead letter; reliable they ack after the answer is confirmed and count
# redeliveries (x-rrpc-deliveries, max_deliveries).  What the C server
# files as a dead letter goes to <service>:dead with the headers
# x-rrpc-reason, x-rrpc-service and x-rrpc-time.  Built on
# the bunny gem, required only when an amqp:// URL is used, so the Redis
# peer needs nothing more than before.  What C does not do over AMQP yet
# the Ruby peer does not either: it refuses with "... is not supported over
# AMQP yet".
module RRPC
  # Internal: the AMQP transport.
  module AMQP
    DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to'
    JSON_TYPE = 'application/json'
    CANCEL_LOOK_S = 0.05

    module_function

    # True if URL (already resolved: see Wire.url) names a broker.
    def url?(url)
      url.is_a?(String) && url.match?(%r{\Aamqps?://}i)
    end

    # An open Bunny session for URL; RedisError's sibling BrokerError (with
    # the password masked) if it cannot connect.
    def connect(url, logger: nil)
      require 'bunny'
      session = Bunny.new(settings(url), logger: logger || Logger.new(File::NULL), automatically_recover: true,
                               network_recovery_interval: 0.5, connection_name: "rrpc-ruby-#{Process.pid}")
      session.start
      session
    rescue Bunny::Exception, SystemCallError, ::Timeout::Error, OpenSSL::OpenSSLError => e
      raise BrokerError, "amqp: cannot connect to #{masked(url)}: #{e.class}: #{e.message}"
    end

    # Bunny's settings for amqp://user:pass@host:port/vhost: every part
    # percent-decoded and a vhost left out (or a lone '/') meaning '/', as
    # the C side reads it (bunny would take "" for a trailing '/').
    # amqps:// adds TLS from the query, RabbitMQ's names as the C side
    # (SECURITY.md section 7): cacertfile (else the system's CAs),
    # certfile + keyfile, verify=verify_none; the broker's certificate and
    # host name are verified by default.  Both take heartbeat=S (RabbitMQ's
    # URI parameter: seconds, 0 for none), passed to bunny.
    def settings(url)
      m = %r{\A(amqps?)://(?:([^:@/]*)(?::([^@/]*))?@)?([^:/?]*)(?::(\d+))?(?:/([^?]*))?(?:\?(.*))?\z}i.match(url)
      raise ArgumentError, "rrpc: not an amqp:// URL: #{masked(url)}" unless m

      scheme, *parts, query = m.captures
      user, pass, host, port, vhost = parts.map { |part| part && unescape(part) }
      tls = scheme.casecmp?('amqps')
      base = { user: user || 'guest', pass: pass || 'guest', host: host.nil? || host.empty? ? 'localhost' : host,
               port: (port || (tls ? 5671 : 5672)).to_i, vhost: vhost.nil? || vhost.empty? ? '/' : vhost }
      opts = (query || '').split('&').to_h { |item| item.split('=', 2).map { |part| unescape(part.to_s) } }
      base.merge(heartbeat_setting(opts.delete('heartbeat'))).merge(tls_settings(tls, opts))
    end

    TLS_KEYS = %w[cacertfile certfile keyfile verify].freeze

    # Bunny's heartbeat option for heartbeat=VALUE (nil: bunny's default,
    # the broker's proposal), 0 to 65535 seconds as the C side takes it.
    def heartbeat_setting(value)
      return {} if value.nil?
      raise ArgumentError, 'rrpc: heartbeat= takes 0 to 65535 seconds' unless value.match?(/\A\d{1,5}\z/) && value.to_i <= 65_535

      { heartbeat: value.to_i }
    end

    # Bunny's TLS options for the URL parameters OPTS (heartbeat taken out)
    # of an amqps:// URL (TLS true).
    def tls_settings(tls, opts)
      raise ArgumentError, "rrpc: amqp:// URLs take no TLS parameters (they are for amqps://): #{opts.keys.first}" if !tls && !opts.empty?
      return {} unless tls

      unknown = opts.keys - TLS_KEYS
      raise ArgumentError, "rrpc: unknown URL parameter '#{unknown.first}' (amqps:// takes #{TLS_KEYS.join(', ')}, heartbeat)" if unknown.any?
      unless %w[verify_peer verify_none].include?(opts.fetch('verify', 'verify_peer'))
        raise ArgumentError, 'rrpc: amqps:// verify= takes verify_peer or verify_none'
      end
      raise ArgumentError, 'rrpc: amqps:// needs certfile= and keyfile= together' if opts.key?('certfile') != opts.key?('keyfile')

      %w[cacertfile certfile keyfile].each do |key|
        # bunny skips a CA file it cannot read: say so instead of failing later.
        raise ArgumentError, "rrpc: amqps:// TLS: cannot read #{key}=#{opts[key]}" if opts.key?(key) && !File.readable?(opts[key])
      end
      { tls: true, verify_peer: opts.fetch('verify', 'verify_peer') == 'verify_peer', tls_silence_warnings: true,
        tls_ca_certificates: opts.key?('cacertfile') ? [opts['cacertfile']] : nil,
        tls_cert: opts['certfile'], tls_key: opts['keyfile'] }.compact
    end

    # %XX decoded ('+' stays '+': these are not form fields).
    def unescape(part)
      part.b.gsub(/%(\h\h)/) { Regexp.last_match(1).hex.chr }.force_encoding(Encoding::UTF_8)
    end

    # Refusals that waiting will not mend: a bad login, a missing vhost.
    def refused?(error)
      cause = error.cause
      defined?(Bunny) && cause.is_a?(Bunny::Exception) &&
        (cause.is_a?(Bunny::PossibleAuthenticationFailureError) || cause.is_a?(Bunny::AuthenticationFailureError) ||
         cause.is_a?(Bunny::NotAllowedError) || cause.is_a?(Bunny::AccessRefused))
    end

    # URL with its password replaced by ***, for messages and logs.
    def masked(url)
      url.sub(%r{\A(amqps?://[^:/@]*:)[^@/]*@}i, '\1***@')
    end

    def unsupported(what)
      raise Unsupported, "#{what} not supported over AMQP yet"
    end

    # Where one call's answer arrives, from bunny's consumer thread: a
    # queue with a timed pop (Thread::Queue#pop has none before Ruby 3.2).
    class Inbox
      def initialize
        @lock = Mutex.new
        @ready = ConditionVariable.new
        @items = []
      end

      def push(item)
        @lock.synchronize do
          @items << item
          @ready.signal
        end
      end

      # The next item, or nil after timeout seconds (nil: no limit).
      def pop(timeout)
        finish = timeout && Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
        @lock.synchronize do
          while @items.empty?
            left = finish && finish - Process.clock_gettime(Process::CLOCK_MONOTONIC)
            return nil if left && left <= 0

            @ready.wait(@lock, left)
          end
          @items.shift
        end
      end
    end

    # Calls over AMQP: the caller of PROTOCOL.md 12.  Safe to share between
    # threads: each call waits on its own queue, keyed by correlation_id.
    class Client < RRPC::Client
      def initialize(url:, prefix: '', timeout: 30, fail_fast: true) # rubocop:disable Lint/MissingSuper
        _ = fail_fast # a queue that does not exist fails fast by itself (basic.return)
        @url = url
        @prefix = prefix
        @timeout = timeout
        @pending = {} # correlation_id -> Inbox
        @lock = Mutex.new
        @session = AMQP.connect(url)
        @channel = @session.create_channel
        @exchange = @channel.default_exchange
        # A request that found no queue comes back: fail its call at once.
        @exchange.on_return { |_info, props, _body| hand(props.correlation_id, :returned) }
        # Direct reply-to: consumed no-ack on the channel we publish on,
        # before anything is published.
        replies = @channel.queue(DIRECT_REPLY_TO, no_declare: true)
        replies.subscribe(manual_ack: false) { |_info, props, body| hand(props.correlation_id, body) }
      end

      # As RRPC::Client#call.  Over AMQP: progress: and priority: high/low
      # raise Unsupported; cancel: stops the wait only (the worker is not
      # told); no deadline member is sent (the expiration does its job).
      def call(service, method, *args, timeout: nil, traceparent: nil, tracestate: nil, progress: nil,
               priority: nil, tenant: nil, cancel: nil, **kwargs)
        wait = timeout || @timeout
        AMQP.unsupported('progress is') if progress
        members = {}
        add_members(members, traceparent, tracestate, priority, tenant)
        AMQP.unsupported('priorities are') if members[:priority]
        id = "#{@prefix}rrpc:reply:#{SecureRandom.hex(16)}"
        members[:id] = id
        text = Wire.generate(Wire.request(method, args, kwargs, **members))
        inbox = Inbox.new
        @lock.synchronize { @pending[id] = inbox }
        begin
          publish(service, text, correlation_id: id, reply_to: DIRECT_REPLY_TO, mandatory: true,
                                 expiration: expiration(wait))
          answer_of(await(inbox, wait, cancel, service, method), id)
        ensure
          @lock.synchronize { @pending.delete(id) }
        end
      end

      # A notification: no reply_to, not mandatory (nobody waits to hear
      # that it found no queue).
      def notify(service, method, *args, traceparent: nil, tracestate: nil, priority: nil, tenant: nil, **kwargs)
        members = {}
        add_members(members, traceparent, tracestate, priority, tenant)
        AMQP.unsupported('priorities are') if members[:priority]
        publish(service, Wire.generate(Wire.request(method, args, kwargs, **members)))
        nil
      end

      def redis
        raise Unsupported, 'this client talks to an AMQP broker, not Redis'
      end

      def close
        @session.close
      rescue Bunny::Exception, SystemCallError
        nil
      end

      private

      def hand(correlation_id, what)
        inbox = @lock.synchronize { @pending[correlation_id] }
        inbox&.push(what) # else a late answer to a call that gave up: dropped
      end

      def publish(service, text, **props)
        @exchange.publish(text, routing_key: "#{@prefix}#{service}", content_type: JSON_TYPE, **props)
      rescue Bunny::Exception, SystemCallError, IOError => e
        raise BrokerError, "amqp: cannot publish to #{@prefix}#{service}: #{e.class}: #{e.message}"
      end

      # The timeout in whole ms, or nil: no limit.
      def expiration(wait)
        wait.positive? && wait < 1e9 ? (wait * 1000).ceil.to_s : nil
      end

      # The answer's body, or raises Timeout, Unavailable (returned),
      # Cancelled.
      def await(inbox, wait, cancel, service, method)
        finish = wait.positive? ? monotonic + wait : nil
        loop do
          raise Cancelled, "#{service}.#{method}: cancelled (over AMQP the worker is not told)" if cancel&.cancelled?

          left = finish && finish - monotonic
          raise Timeout, "#{service}.#{method}: no reply within #{wait} s" if left && left <= 0

          step = cancel ? [left || CANCEL_LOOK_S, CANCEL_LOOK_S].min : left
          got = inbox.pop(step)
          next if got.nil?
          if got == :returned
            raise Unavailable, "service '#{@prefix}#{service}' has no queue on the broker (the request came " \
                               'back unrouted): is its server running?'
          end
          return got
        end
      end

      def answer_of(body, id)
        result_of(body, id)
      end
    end

    # What the dispatcher sends progress to and reads cancel keys from:
    # neither travels over AMQP yet, so progress is dropped and nothing is
    # ever cancelled.
    class Sink
      def progress(_key, _body)
        false
      end

      def cancelled?(_key)
        false
      end
    end

    # Serves an object over AMQP: the worker of PROTOCOL.md 12.
    class Server < RRPC::Server
      DELIVERIES_HEADER = 'x-rrpc-deliveries'
      # The dedup memory's bounds, the C server's (amqp/dedup.c).
      DEDUP_MAX = 8192
      DEDUP_ANSWER_MAX = 65_536

      # As RRPC::Server.new.  Over AMQP: the service's queue is declared as
      # the C server declares it for the same options (PROTOCOL.md 12, "Queue
      # declarations"), and <service>:dead (durable, dead_letter_max long)
      # keeps what the C server would keep.  reliable: true (over AMQP only;
      # the Redis peer has no reliable mode): a durable queue, the channel in
      # confirm mode, each message acked only after its answer (and dead
      # letter) was confirmed, so a worker killed mid-call leaves it to
      # another; a redelivery this process answered (dedup_window seconds) is
      # answered from memory, else counted in x-rrpc-deliveries and filed as a
      # dead letter at max_deliveries.  max_queue > 0: x-max-length with
      # reject-publish (callers get "overloaded").  heartbeat (the default)
      # answers the registry's queries while it serves (AMQP::Registry), so
      # rrpc ls/info/stats see it.  reply_ttl/reply_prefixes do not apply
      # (answers go to reply_to).  prefetch: messages the broker hands this
      # worker ahead (1: fair dispatch).
      def initialize(service, obj, url:, prefix: '', max_request_bytes: 1_048_576, batch_max: 1000,
                     batch_time_limit: 5.0, logger: Logger.new($stderr, progname: 'rrpc'), heartbeat: true,
                     heartbeat_interval: 1.0, heartbeat_ttl: 5.0, max_queue: 0, prefetch: 1, start_timeout: 0,
                     dead_letter_max: 1000, reliable: false, max_deliveries: 3, dedup_window: 600, **_redis_only)
        @url = url
        @service = service
        @queue = "#{prefix}#{service}"
        @dead_queue = "#{@queue}:dead"
        @dead_letter_max = dead_letter_max.to_i
        @max_queue = max_queue.to_i.positive? ? max_queue.to_i : 0
        @reliable = reliable ? true : false
        @max_deliveries = max_deliveries.to_i.positive? ? max_deliveries.to_i : 3
        @dedup_window = dedup_window.to_f
        @answers = {} # reliable: correlation_id => [until, text], oldest first
        @dead_off = false # a plain service whose user may not declare <service>:dead
        @log = logger
        @prefetch = prefetch
        @start_timeout = start_timeout.to_f
        @version = "ruby-#{VERSION}"
        @clock = RedisClock.new # never synced: no deadlines over AMQP
        @stopping = false
        @worker_id = "#{Socket.gethostname}:#{Process.pid}:#{SecureRandom.hex(4)}"
        # What this transport adds to the dispatcher's counters (PROTOCOL.md 12).
        @own = { 'lost' => 0, 'dead_letters' => 0, 'redelivered' => 0 }
        # Before the dispatcher, which counts each method's calls in its stats.
        @registry = if heartbeat
                      Registry.new(service: service, url: url, prefix: prefix, id: @worker_id,
                                   interval: heartbeat_interval, ttl: heartbeat_ttl, counts: method(:counts),
                                   logger: @log)
                    end
        @dispatcher = dispatcher_for(obj, sink: Sink.new, max_request_bytes: max_request_bytes,
                                          batch_max: batch_max, batch_time_limit: batch_time_limit)
      end

      # Requests dropped or answers that could not be sent.
      def lost = @own['lost']

      # The counters its registry answers carry (PROTOCOL.md 12), as the C
      # server's: the dispatcher's, and what this transport adds.
      def counts
        Registry::COUNTERS.to_h { |k| [k, 0] }.merge(@dispatcher.counts, @own)
      end

      # Connects (waiting for the broker as start_timeout says), declares
      # the queues, consumes with a prefetch and answers until stop or
      # SIGINT/SIGTERM.  A broken link is mended by bunny's recovery.  A queue
      # that exists with other settings raises BrokerError, saying what to do.
      def serve_forever
        previous = %w[INT TERM].to_h { |sig| [sig, trap(sig) { stop }] }
        session = connect_waiting
        return unless session

        # bunny mends a broken link (connection, channel, queue, consumer);
        # said in the log, as the C server does.
        session.before_recovery_attempt_starts { @log.warn("#{@service}: link lost, connecting again") }
        session.after_recovery_completed { @log.info("#{@service}: reconnected") }
        channel, queue = open_channel(session)
        consumer = queue.subscribe(manual_ack: true) do |info, props, body|
          handle_delivery(channel, info, props, body)
        end
        seen = @registry&.start(version: @version, methods: method_entries)
        mode = @reliable ? 'reliable: durable queue, at least once' : 'at most once'
        @log.info("#{@service}: serving queue '#{@queue}' over AMQP (#{mode}#{@max_queue.positive? ? ', max_queue' : ''})" +
                  (seen ? '' : ', unregistered: rrpc ls/info/stats do not see it'))
        sleep 0.05 until @stopping
        consumer.cancel
      ensure
        previous&.each { |sig, handler| trap(sig, handler) }
        @registry&.stop
        begin
          session&.close
        rescue StandardError
          nil
        end
      end

      private

      def connect_waiting
        began = monotonic
        delay = START_BACKOFF_MIN_S
        waited = false
        loop do
          session = AMQP.connect(@url)
          @log.warn(format('%<s>s: the broker answered after %<t>.1f s', s: @service, t: monotonic - began)) if waited
          return session
        rescue BrokerError => e
          raise if @start_timeout.negative? || AMQP.refused?(e)

          left = @start_timeout.positive? ? began + @start_timeout - monotonic : Float::INFINITY
          raise BrokerError, "#{@service}: the broker did not answer within #{@start_timeout} s: #{e.message}" if left <= 0

          @log.warn("#{@service}: waiting for the broker: #{e.message}") unless waited
          waited = true
          pause([delay * (0.5 + rand), left].min)
          return nil if @stopping

          delay = [delay * 2, START_BACKOFF_MAX_S].min
        end
      end

      # The service queue's arguments, the C server's for the same options:
      # none for an at-most-once service without max_queue (the tutorial's
      # plain queue), else dead-lettering to <service>:dead and the bound.
      def queue_arguments
        return {} unless @reliable || @max_queue.positive?

        args = { 'x-dead-letter-exchange' => '', 'x-dead-letter-routing-key' => @dead_queue }
        args.merge!('x-max-length' => @max_queue, 'x-overflow' => 'reject-publish') if @max_queue.positive?
        args
      end

      # A channel with the queues declared (and confirms when reliable), and
      # the service's Bunny::Queue.
      def open_channel(session)
        channel = session.create_channel
        queue = declare(channel, @queue, durable: @reliable, arguments: queue_arguments)
        begin
          declare(channel, @dead_queue, durable: true, arguments: { 'x-max-length' => @dead_letter_max })
        rescue Bunny::AccessRefused => e
          # A plain service's user may lack the name (a recipe that predates it).
          raise BrokerError, "#{@service}: declaring queue '#{@dead_queue}': #{e.message}" if @reliable || @max_queue.positive?

          @dead_off = true
          @log.warn("#{@service}: no dead-letter queue (#{e.message}): dead letters are only logged")
          channel = session.create_channel
          queue = declare(channel, @queue, durable: false, arguments: {})
        end
        channel.confirm_select if @reliable
        channel.prefetch(@prefetch)
        [channel, queue]
      end

      def declare(channel, name, durable:, arguments:)
        channel.queue(name, durable: durable, arguments: arguments)
      rescue Bunny::PreconditionFailed => e
        raise BrokerError, "#{@service}: declaring queue '#{name}': #{e.message} -- the queue exists with other " \
                           'settings (a plain queue of an at-most-once service or a tutorial-style worker, or one of a ' \
                           'server with other reliable/max_queue options): stop its users and delete it (rabbitmqctl ' \
                           'delete_queue), or serve with the same options (docs/PROTOCOL.md section 12)'
      end

      # One delivery.  At most once: acked first; a redelivery (it may have
      # run on a worker whose link broke) is filed as a dead letter, not run.
      def handle_delivery(channel, info, props, body)
        return handle_reliable(channel, info, props, body) if @reliable

        channel.ack(info.delivery_tag)
        return file(channel, props, body, 'redelivered: at most once, it may have run already') if info.redelivered?

        take(channel, props, body)
      rescue *Dispatcher::STOPS
        raise
      rescue Exception => e # rubocop:disable Lint/RescueException -- a bug here must not take the worker down
        @own['lost'] += 1
        @log.error("#{@service}: answer lost: #{e.class}: #{e.message}")
        # Reliable, on a link still up: acked as the C server does (on a
        # broken one the broker hands the message out again).
        channel.ack(info.delivery_tag) if @reliable && channel.open?
      end

      # Reliable: acked only once its answer and dead letter were confirmed.
      def handle_reliable(channel, info, props, body)
        cid = props.correlation_id.to_s
        cid = nil if cid.empty?
        said = recall(cid)
        if said # a redelivery or a resend of a request answered here
          reply_to = props.reply_to.to_s
          publish(channel, reply_to, said, correlation_id: cid, content_type: JSON_TYPE) unless said.empty? || reply_to.empty?
        elsif info.redelivered?
          count_delivery(channel, props, body)
        else
          begin
            @said = nil
            take(channel, props, body)
          ensure
            # Remembered even if the answer was lost with the link: a
            # redelivery here is answered, not run again.
            remember(cid, @said || '')
          end
        end
        channel.ack(info.delivery_tag)
      end

      # Runs one message and answers it (if it has a reply_to); files what
      # the C server files as a dead letter.  @said: what it answers.
      def take(channel, props, body)
        outcome = @dispatcher.dispatch(body.b)
        text = answer_text(outcome)
        reply_to = props.reply_to.to_s
        unless text.nil? || reply_to.empty? # else a notification
          @said = text
          publish(channel, reply_to, text, correlation_id: props.correlation_id, content_type: JSON_TYPE)
        end
        reason = outcome.dead || (outcome.body && outcome.key.nil? ? 'no reply key' : nil)
        file(channel, props, body, reason) if reason
      end

      # A message taken back from a worker whose link broke: published
      # again with x-rrpc-deliveries + 1 (behind the queue), or, once counted
      # max_deliveries times, filed as a dead letter.
      def count_delivery(channel, props, body)
        @own['redelivered'] += 1
        headers = (props.headers || {}).dup
        n = headers[DELIVERIES_HEADER].to_i + 1
        if n >= @max_deliveries
          return file(channel, props, body, "taken by #{n} workers that died (max_deliveries #{@max_deliveries})")
        end

        publish(channel, @queue, body, **copied(props), headers: headers.merge(DELIVERIES_HEADER => n))
      end

      # Files the message on <service>:dead: its body and properties as they
      # came (no expiration), persistent, with the reason in x-rrpc-reason.
      def file(channel, props, body, reason)
        @log.warn("#{@service}: dead letter: #{reason}")
        if @dead_off
          @own['lost'] += 1
          return @log.warn("#{@service}: dead letter not kept (no dead-letter queue): #{body[0, 200].inspect}")
        end
        headers = { 'x-rrpc-reason' => reason, 'x-rrpc-service' => @service,
                    'x-rrpc-time' => format('%.3f', Time.now.to_f) }
        publish(channel, @dead_queue, body, **copied(props), headers: headers, delivery_mode: 2)
        @own['dead_letters'] += 1
      end

      # PROPS as publish options, without the expiration (a kept message
      # waits for an operator).
      def copied(props)
        props.to_hash.reject { |k, v| v.nil? || %i[expiration headers].include?(k) }
      end

      # Publishes through the default exchange; reliable: waits for the
      # broker's confirm.
      def publish(channel, queue, body, **props)
        channel.default_exchange.publish(body, routing_key: queue, **props)
        return if !@reliable || channel.wait_for_confirms

        raise BrokerError, "the broker refused a publish to '#{queue}' (basic.nack)"
      end

      # The answer this process sent to CID ('' if none was sent), or nil.
      def recall(cid)
        return nil if cid.nil?

        now = monotonic
        @answers.shift while !@answers.empty? && (@answers.first[1][0] <= now || @answers.size > DEDUP_MAX)
        @answers[cid]&.last
      end

      def remember(cid, said)
        return if cid.nil? || said.bytesize > DEDUP_ANSWER_MAX || !@dedup_window.positive?

        @answers.delete(cid)
        @answers[cid] = [monotonic + @dedup_window, said]
      end

      # What to answer a message's outcome with, or nil: the dispatcher's
      # response, or for what it could not read (a dead letter), -32700 /
      # -32600 with a null id (over AMQP reply_to addresses it).
      def answer_text(outcome)
        return outcome.body if outcome.body
        return nil unless outcome.dead

        parse = outcome.dead.start_with?('parse error', 'invalid UTF-8')
        err = Wire.error(nil, parse ? PARSE_ERROR : INVALID_REQUEST, parse ? 'Parse error' : 'Invalid Request')
        err['error']['data'] = outcome.dead
        Wire.generate(err)
      end
    end
  end
  private_constant :AMQP
end
