# frozen_string_literal: true

require 'json'
require 'redis'

# protocol.rb -- the wire rules both ends share (docs/PROTOCOL.md): error
# codes, strict JSON, request validation, the reply key of section 3 and
# that of a batch (section 5).  No I/O beyond opening a connection.
module RRPC
  DEFAULT_URL = 'redis://127.0.0.1:6379'

  PARSE_ERROR = -32_700
  INVALID_REQUEST = -32_600
  METHOD_NOT_FOUND = -32_601
  INVALID_PARAMS = -32_602
  INTERNAL_ERROR = -32_603
  DEADLINE_EXCEEDED = -32_000
  BATCH_TIME_EXCEEDED = -32_001
  CANCELLED = -32_002 # the caller cancelled it (PROTOCOL.md 7, cancel_key)

  # JSON and key helpers shared by both ends; internal.
  module Wire
    module_function

    # A redis+sentinel:// or redis+cluster:// URL gives redis-rb's Sentinel
    # or Cluster client (redis_url.rb).
    def connect(url)
      RedisURL.connect(url(url))
    end

    # The URL to use: URL, else $RRPC_URL, else $REDIS_URL (as the C
    # side), else Redis on localhost.  amqp:// selects the AMQP transport.
    def url(url)
      [url, ENV.fetch('RRPC_URL', nil), ENV.fetch('REDIS_URL', nil)].find { |u| u && !u.empty? } || DEFAULT_URL
    end

    # Strict JSON, agreeing with the C and Python peers: Ruby's parser also
    # accepts comments, unknown escapes ("\x"), unpaired surrogates and turns
    # 1e400 into Infinity; refuse all of them.
    def parse(text)
      value = JSON.parse(text, max_nesting: 1000)
      if text.include?('/') || text.include?('\\')
        # Strings are matched first, so a '/' left over begins a comment.
        text.scan(%r{"(?:[^"\\]++|\\.)*+"|/}m) do |token|
          raise JSON::ParserError, 'comments are not JSON' if token == '/'
          raise JSON::ParserError, 'invalid escape in a string' if token.include?('\\') && bad_escapes?(token[1..-2])
        end
      end
      raise JSON::ParserError, 'number out of range' if text.match?(/\d[eE][+-]?\d{3}|\d{300}/) && infinite?(value)

      value
    end

    # Escapes JSON allows, with \uD800-\uDBFF always followed by \uDC00-\uDFFF.
    def bad_escapes?(body)
      high = false
      body.scan(/\\u(\h{4})|\\(.)|[^\\]+/m) do |hex, char|
        code = hex&.hex
        if high
          return true unless code && (0xDC00..0xDFFF).cover?(code)

          high = false
        elsif code
          return true if (0xDC00..0xDFFF).cover?(code)

          high = (0xD800..0xDBFF).cover?(code)
        elsif char
          return true unless '"\\/bfnrt'.include?(char)
        end
      end
      high
    end

    def infinite?(value)
      stack = [value]
      until stack.empty?
        item = stack.pop
        case item
        when Float then return true unless item.finite?
        when Array then stack.concat(item)
        when Hash then stack.concat(item.values)
        end
      end
      false
    end

    def generate(value)
      JSON.generate(value, max_nesting: false)
    end

    def number?(value)
      value.is_a?(Integer) || value.is_a?(Float)
    end

    def valid_id?(value)
      value.nil? || value.is_a?(String) || value.is_a?(Integer) || (value.is_a?(Float) && value.finite?)
    end

    # Why req is not a valid request object (PROTOCOL.md 2), or nil.
    def invalid_reason(req)
      return 'Invalid Request: not an object' unless req.is_a?(Hash)
      return 'Invalid Request: id must be a string, a number or null' if req.key?('id') && !valid_id?(req['id'])
      return 'Invalid Request: jsonrpc must be "2.0"' unless req['jsonrpc'] == '2.0'
      return 'Invalid Request: method must be a string' unless req['method'].is_a?(String)
      if req.key?('params') && !(req['params'].is_a?(Array) || req['params'].is_a?(Hash))
        return 'Invalid Request: params must be an array or an object'
      end

      nil
    end

    # A valid request without an id: run, never answered.
    def notification?(req)
      req.is_a?(Hash) && !req.key?('id') && invalid_reason(req).nil?
    end

    # The largest integer every peer reads exactly (a double's 53-bit mantissa).
    MAX_EXACT_ID = 2**53

    # The reply key of PROTOCOL.md section 3, or nil if none can be read: a
    # non-empty reply_to, else a non-empty string id, else an id with an
    # integral value of at most 2^53 as decimal text (100.0 and 1e2 -> "100").
    def reply_key(req)
      return nil unless req.is_a?(Hash)

      reply_to = req['reply_to']
      return reply_to if reply_to.is_a?(String) && !reply_to.empty?

      id = req['id']
      return id.empty? ? nil : id if id.is_a?(String)
      return nil unless number?(id) && (id.is_a?(Integer) || (id.finite? && id == id.truncate))

      id.abs <= MAX_EXACT_ID ? id.to_i.to_s : nil
    end

    # A batch's reply key (PROTOCOL.md 5): that of its first element that is
    # answered -- anything but a valid notification -- and has one.  The
    # same for a batch too long to run, so that its one error goes where
    # the answers would have.
    def batch_reply_key(batch)
      batch.each do |req|
        next if notification?(req)

        key = reply_key(req)
        return key if key
      end
      nil
    end

    def request(method, args, kwargs, **members)
      raise ArgumentError, 'rrpc: pass positional or named params, not both' if !args.empty? && !kwargs.empty?

      req = { 'jsonrpc' => '2.0', 'method' => method.to_s }
      if !args.empty?
        req['params'] = args
      elsif !kwargs.empty?
        req['params'] = kwargs
      end
      req.merge!(members.transform_keys(&:to_s))
    end

    def error(id, code, message, data = nil)
      err = { 'code' => code, 'message' => message }
      err['data'] = data unless data.nil?
      { 'jsonrpc' => '2.0', 'error' => err, 'id' => id }
    end
  end
  private_constant :Wire
end
