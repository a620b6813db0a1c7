#!/usr/bin/env ruby
# frozen_string_literal: true

# fault_worker.rb -- the Ruby calc worker plus handlers that raise what a
# worker must survive (check_peer_faults.py drives it).
#
# Each fault method raises an exception that is not a StandardError, or
# exhausts a resource; the worker must answer -32603 and go on.
#
#   ruby fault_worker.rb --redis URL --service NAME

require 'optparse'
require_relative '../../clients/ruby/calc_server'

# An application's own Exception subclass, outside StandardError.
class Custom < Exception; end # rubocop:disable Lint/InheritException

class Faulty < Calc
  def not_implemented = raise(NotImplementedError, 'from a handler')

  def recurse(depth = 0) = recurse(depth + 1) # SystemStackError

  def script_error = raise(ScriptError, 'from a handler')

  def load_error = raise(LoadError, 'from a handler')

  def no_memory = raise(NoMemoryError, 'pretend the heap is full')

  def custom_exception = raise(Custom, 'not a StandardError')

  def system_exit = exit(3) # the one way a handler may end the worker
end

opts = {}
OptionParser.new do |o|
  o.on('--redis URL') { |v| opts[:redis] = v }
  o.on('--service NAME') { |v| opts[:service] = v }
end.parse!
$stderr.sync = true
RRPC::Server.new(opts.fetch(:service), Faulty.new, url: opts.fetch(:redis)).serve_forever
warn 'fault_worker.rb: stopped'
