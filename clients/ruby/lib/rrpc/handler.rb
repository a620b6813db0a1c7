# frozen_string_literal: true

# handler.rb -- what a handler class may declare about its methods.
module RRPC
  # Extend a handler class with this to mark methods that take the request's
  # params whole (an Array, a Hash, or nil when absent) instead of bound to
  # their parameters -- for methods like echo that care which form was sent:
  #
  #   class Calc
  #     extend RRPC::Handler
  #     raw_params :echo
  #     def echo(params) = params
  #   end
  #
  # It also gives methods a description (and optionally an informal params
  # shape, any JSON) for the registry, where `rrpc info` shows them:
  #
  #     describe :add, 'add(a, b): a + b', params: { a: 'number', b: 'number' }
  module Handler
    def raw_params(*names)
      rrpc_raw_params.concat(names.map(&:to_s))
    end

    def rrpc_raw_params
      @rrpc_raw_params ||= []
    end

    def describe(name, description, params: nil)
      rrpc_descriptions[name.to_s] = { 'description' => description, 'params' => params }.compact
    end

    def rrpc_descriptions
      @rrpc_descriptions ||= {}
    end
  end
end
