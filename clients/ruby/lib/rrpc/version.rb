# frozen_string_literal: true

# version.rb -- the peer's version.  The repository's VERSION file is the one
# place a release changes; a gem carries no VERSION file, so the number is
# written here and checked against it by rrpc.gemspec (gem build refuses a
# mismatch) and by tests/unit/test_version.sh.
module RRPC
  VERSION = '0.2.0'
end
