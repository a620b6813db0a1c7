#!/usr/bin/env ruby
# frozen_string_literal: true

# calc_server.rb -- runs the calc example worker (examples/calc_server.rb)
# from a checkout, at the path the tests, scripts and docs use.  Required
# rather than run, it only defines the Calc class (fault_worker.rb does).
require_relative 'examples/calc_server'

CalcServer.main(ARGV) if $PROGRAM_NAME == __FILE__
