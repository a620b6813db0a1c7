# frozen_string_literal: true

# params.rb -- binding a request's params to a Ruby method's parameters:
# positional params to positional parameters, named params by name to
# positional and keyword parameters alike.  Checked before the call, so
# that an ArgumentError raised inside the handler stays an internal error
# and never passes for the caller's mistake.
module RRPC
  # Internal.
  module Params
    module_function

    # [args, kwargs] to call meth with; raises InvalidParams.
    def bind(meth, params)
      ps = meth.parameters
      case params
      when nil then bind_positional(ps, [])
      when Array then bind_positional(ps, params)
      else bind_named(ps, params)
      end
    end

    def bind_positional(ps, args)
      required = ps.count { |type, _| type == :req }
      optional = ps.count { |type, _| type == :opt }
      if args.size < required
        name = ps.select { |type, _| type == :req }[args.size][1]
        raise InvalidParams, "Invalid params: missing parameter '#{name}'"
      end
      if args.size > required + optional && ps.none? { |type, _| type == :rest }
        raise InvalidParams, "Invalid params: too many parameters (#{args.size} given, at most #{required + optional})"
      end
      missing = ps.find { |type, _| type == :keyreq }
      raise InvalidParams, "Invalid params: missing parameter '#{missing[1]}'" if missing

      [args, {}]
    end

    def bind_named(ps, params)
      rest = params.dup
      args = []
      kwargs = {}
      skipped = nil
      ps.each do |type, name|
        key = name.to_s
        case type
        when :req, :opt
          if rest.key?(key) && name
            raise InvalidParams, "Invalid params: '#{key}' given without '#{skipped}'" if skipped

            args << rest.delete(key)
          elsif type == :req
            raise InvalidParams, "Invalid params: missing parameter '#{key}'"
          else
            skipped ||= key
          end
        when :keyreq
          raise InvalidParams, "Invalid params: missing parameter '#{key}'" unless rest.key?(key)

          kwargs[name] = rest.delete(key)
        when :key
          kwargs[name] = rest.delete(key) if rest.key?(key)
        end
      end
      unless rest.empty?
        raise InvalidParams, "Invalid params: unexpected parameter '#{rest.keys.first}'" if ps.none? { |type, _| type == :keyrest }

        kwargs.merge!(rest.transform_keys(&:to_sym))
      end
      [args, kwargs]
    end
  end
  private_constant :Params
end
