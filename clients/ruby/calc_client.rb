#!/usr/bin/env ruby
# frozen_string_literal: true

# calc_client.rb -- runs the calc example caller (examples/calc_client.rb)
# from a checkout, at the path the tests, scripts and docs use.
require_relative 'examples/calc_client'

exit(CalcClient.main(ARGV).zero? ? 0 : 1) if $PROGRAM_NAME == __FILE__
