# frozen_string_literal: true

# rrpc.gemspec -- the Ruby peer of rrpc as a gem: `gem build rrpc.gemspec`.
#
# The version is lib/rrpc/version.rb's (a gem carries no VERSION file);
# built from the repository, it must equal the repository's VERSION file or
# the build stops here.  Depends only on the redis gem (Debian's ruby-redis,
# 4.8, satisfies it: test_gem.sh installs the built gem offline over it).
require_relative 'lib/rrpc/version'

repo_version = File.expand_path('../../VERSION', __dir__)
if File.file?(repo_version) && File.read(repo_version).strip != RRPC::VERSION
  raise "rrpc.gemspec: lib/rrpc/version.rb says #{RRPC::VERSION}, " \
        "but #{repo_version} says #{File.read(repo_version).strip}: make them agree"
end

Gem::Specification.new do |s|
  s.name = 'rrpc'
  s.version = RRPC::VERSION
  s.summary = 'JSON-RPC 2.0 over Redis lists: the Ruby client and worker of rrpc'
  s.description = 'Calls rrpc services and serves them from Ruby, interchangeably with the C, ' \
                  'Python and seed-style peers: deadlines on Redis\'s clock, the registry ' \
                  '(heartbeats, fail fast, max_queue), reply-key rules and bounded dead letters ' \
                  'of docs/PROTOCOL.md.'
  s.authors = ['rrpc authors']
  s.files = Dir.chdir(__dir__) do
    Dir['lib/**/*.rb', 'examples/*.rb', 'test/*.rb', 'README.md', 'rrpc.gemspec']
  end
  s.require_paths = ['lib']
  s.required_ruby_version = '>= 3.0' # endless methods in the examples; Debian 12 has 3.1
  # Tested with 4.8 (Debian 12's ruby-redis); redis 5 changed the client underneath.
  s.add_runtime_dependency 'redis', '>= 4.6', '< 5'
  # amqp:// URLs (RabbitMQ, PROTOCOL.md 12) load the bunny gem, only then:
  # not a dependency, so that a Redis-only user needs nothing more.
  s.requirements << 'bunny >= 2.19 (Debian: ruby-bunny) for amqp:// URLs only'
  s.metadata['rubygems_mfa_required'] = 'true'
end
