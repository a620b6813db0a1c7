# frozen_string_literal: true

# test_protocol.rb -- the wire rules and the dead letter record, without a
# worker: reply keys (PROTOCOL.md 3 and 5) and bounded copies (6).
require_relative 'test_helper'

class TestProtocol < Minitest::Test
  Wire = RRPC.const_get(:Wire)
  DeadLetter = RRPC.const_get(:DeadLetter)

  def req(**members)
    { 'jsonrpc' => '2.0', 'method' => 'add', 'params' => [1, 2] }.merge(members.transform_keys(&:to_s))
  end

  def test_reply_key_rules
    assert_equal 'r', Wire.reply_key(req(id: 'x', reply_to: 'r'))
    assert_equal 'x', Wire.reply_key(req(id: 'x'))
    assert_equal '100', Wire.reply_key(req(id: 100.0))
    assert_nil Wire.reply_key(req(id: 1.5))
    assert_nil Wire.reply_key(req(id: 2**53 + 1))
    assert_nil Wire.reply_key(req(id: ''))
  end

  def test_batch_reply_key_skips_valid_notifications_only
    note = req(reply_to: 'note')
    invalid_note = { 'jsonrpc' => '1.0', 'method' => 'add', 'reply_to' => 'bad' }
    assert_equal 'call', Wire.batch_reply_key([note, req(id: 1, reply_to: 'call')])
    assert_equal 'bad', Wire.batch_reply_key([note, invalid_note, req(id: 1, reply_to: 'call')])
    assert_nil Wire.batch_reply_key([note, note])
    assert_nil Wire.batch_reply_key([note, req(id: nil)])
  end

  def test_small_message_is_kept_whole_or_as_base64
    letter = JSON.parse(DeadLetter.build(service: 's', reason: 'r', message: 'héllo'.b, keep: 100))
    assert_equal 'héllo', letter['message']
    letter = JSON.parse(DeadLetter.build(service: 's', reason: 'r', message: "\xff\xfe".b, keep: 100))
    assert_equal "\xff\xfe".b, letter['message_base64'].unpack1('m0')
    refute letter.key?('message')
  end

  def test_large_message_is_bounded
    text = ('é' * 3000).b # 6000 bytes; the cut at 4096 falls inside no sequence
    text = "x#{text}".b # now it does: byte 4096 is a continuation byte
    letter = JSON.parse(DeadLetter.build(service: 's', reason: 'too large', message: text, keep: 1000))
    refute letter.key?('message')
    assert_equal text.bytesize, letter['message_bytes']
    assert_equal Digest::SHA1.hexdigest(text), letter['message_sha1']
    prefix = letter['message_prefix'].b
    assert_operator prefix.bytesize, :<=, 4096
    assert_equal 4095, prefix.bytesize # backed up to the sequence's start
    assert text.start_with?(prefix)
  end

  def test_large_invalid_message_prefix_is_base64
    text = ("\xff" * 5000).b
    letter = JSON.parse(DeadLetter.build(service: 's', reason: 'too large', message: text, keep: 1000))
    prefix = letter['message_prefix_base64'].unpack1('m0')
    assert_equal 4096, prefix.bytesize
    assert text.start_with?(prefix)
  end

  def test_response_whole_or_bounded
    small = '{"jsonrpc":"2.0","result":[1,"é"],"id":null}'
    letter = JSON.parse(DeadLetter.build(service: 's', reason: 'no reply key', message: 'm', keep: 1000,
                                         response: small))
    assert_equal JSON.parse(small), letter['response']
    big = Wire.generate({ 'jsonrpc' => '2.0', 'result' => 'y' * 5000, 'id' => nil })
    letter = JSON.parse(DeadLetter.build(service: 's', reason: 'no reply key', message: 'm', keep: 1000,
                                         response: big))
    refute letter.key?('response')
    assert_equal big.bytesize, letter['response_bytes']
    assert_equal Digest::SHA1.hexdigest(big), letter['response_sha1']
    assert_equal big.byteslice(0, 4096), letter['response_prefix']
  end
end
