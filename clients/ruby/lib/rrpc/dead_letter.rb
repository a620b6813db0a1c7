# frozen_string_literal: true

require 'digest'

# dead_letter.rb -- the record kept for a message no one can be answered for
# (PROTOCOL.md section 6).  The text may be anything, including invalid
# UTF-8, which JSON strings cannot carry: such bytes are kept exactly as
# "message_base64".  A message (or an undeliverable response) larger than
# the worker's size limit is not kept whole: its first bytes, its length and
# its SHA-1 are, so that a hostile sender cannot make a worker build -- or
# Redis refuse -- a huge record.  Pure: building the record does no I/O.
module RRPC
  # Internal.
  module DeadLetter
    PREFIX_BYTES = 4096 # the most a bounded copy keeps of a text

    module_function

    # The record as JSON text (binary): reason, time, service, the message
    # (whole if at most keep bytes, else bounded) and the response text
    # that could not be delivered, if any (the same way).
    # trace: the message's traceparent if the caller found it already.
    def build(service:, reason:, message:, keep:, response: nil, trace: :find)
      letter = { 'reason' => reason, 'time' => Time.now.to_f, 'service' => service }
      message = message.b
      if message.bytesize <= keep
        set_bytes(letter, 'message', message)
      else
        set_bounded(letter, 'message', message)
      end
      trace = trace_of(message, keep) if trace == :find
      letter['traceparent'] = trace if trace
      return Wire.generate(letter).b if response.nil?

      response = response.b
      if response.bytesize > keep
        set_bounded(letter, 'response', response)
        return Wire.generate(letter).b
      end
      # The response is JSON this worker wrote: spliced in as it is, rather
      # than parsed and written again.
      text = Wire.generate(letter).b
      text[0..-2] << ',"response":'.b << response << '}'.b
    end

    # The valid traceparent of the message (a batch's first that has one),
    # so that a dead letter can be found by its trace; a message too large
    # to parse is searched as text, in the prefix the record keeps.
    def trace_of(message, keep)
      if message.bytesize > keep
        message.byteslice(0, PREFIX_BYTES).scan(/"traceparent":"([^"]*)"/n) do |(value)|
          found = Trace.parse(value)
          return found if found
        end
        return nil
      end
      text = message.dup.force_encoding(Encoding::UTF_8)
      return nil unless text.valid_encoding?

      msg = Wire.parse(text)
      (msg.is_a?(Array) ? msg : [msg]).each do |req|
        found = req.is_a?(Hash) && Trace.parse(req['traceparent'])
        return found if found
      end
      nil
    rescue JSON::ParserError
      nil
    end

    # name: the bytes as a JSON string, or name_base64 if they are not UTF-8.
    def set_bytes(letter, name, bytes)
      text = bytes.dup.force_encoding(Encoding::UTF_8)
      if text.valid_encoding?
        letter[name] = text
      else
        letter["#{name}_base64"] = [bytes].pack('m0')
      end
    end

    # A text too large to keep: name_prefix (or name_prefix_base64),
    # name_bytes and name_sha1.
    def set_bounded(letter, name, bytes)
      set_bytes(letter, "#{name}_prefix", bytes.byteslice(0, utf8_cut(bytes, PREFIX_BYTES)))
      letter["#{name}_bytes"] = bytes.bytesize
      letter["#{name}_sha1"] = Digest::SHA1.hexdigest(bytes)
    end

    # The length of the longest start of bytes of at most max bytes that
    # does not end inside a UTF-8 sequence (a valid text stays valid when
    # cut), as the C worker cuts it.
    def utf8_cut(bytes, max)
      return bytes.bytesize if bytes.bytesize <= max

      n = max
      4.times do
        break unless n.positive? && (bytes.getbyte(n) & 0xC0) == 0x80

        n -= 1
      end
      n
    end
  end
  private_constant :DeadLetter
end
