"""handlers.py -- how a server finds, describes and calls its methods.

A service's methods are the public methods of an object, a dict of
callables, or functions registered one by one; params are bound to a
handler's parameters (positional from an array, named from an object)
unless it asks for them whole (raw_params).  What a handler returns is the
result; what it raises becomes the error (RpcError's own, -32602 when the
params do not fit its signature, else -32603).
"""

import inspect
import logging

from . import trace
from .errors import RpcError
from .protocol import INTERNAL_ERROR, INVALID_PARAMS

log = logging.getLogger('rrpc')

# What a handler may raise that still ends the worker: the process is being
# told to stop.  Everything else (GeneratorExit, RecursionError, MemoryError,
# an application's own BaseException subclasses) is one call's failure.
STOPS = (KeyboardInterrupt, SystemExit)


def raw_params(fn):
    """Marks a handler that receives the request's params whole, as one
    argument (a list, a dict, or None when absent), instead of bound to its
    parameters -- for methods like echo that care which form was sent."""
    fn._rrpc_raw_params = True
    return fn


def describe(description, params=None):
    """Gives a handler a description (and optionally an informal params
    shape, any JSON) for the registry, where `rrpc info` shows them:

        @rrpc.describe('add(a, b): a + b', {'a': 'number', 'b': 'number'})
        def add(self, a, b): ...
    """
    def mark(fn):
        fn._rrpc_description = description
        fn._rrpc_params = params
        return fn
    return mark


def public_methods(obj):
    """{name: callable} of OBJ: a dict as it is, else its public methods."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return dict(obj)
    methods = {}
    for name in dir(obj):
        if name.startswith('_'):
            continue
        member = getattr(obj, name)
        if callable(member) and not inspect.isclass(member):
            methods[name] = member
    return methods


def entry(name, fn, description=None, shape=None):
    """The method's entry in the registry record (PROTOCOL.md 9): the
    description and params shape given, else those of @describe."""
    item = {'name': name}
    if description is None:
        description = getattr(fn, '_rrpc_description', None)
        shape = getattr(fn, '_rrpc_params', None)
    if description is not None:
        item['description'] = description
    if shape is not None:
        item['params'] = shape
    return item


OPENRPC_VERSION = '1.3.2'
_TYPES = ('null', 'boolean', 'integer', 'number', 'string', 'array', 'object')


def _descriptor(name, kind=None, required=False):
    """An OpenRPC content descriptor; KIND a JSON type name or free text."""
    schema = {'type': kind} if kind in _TYPES else {}
    d = {'name': name, 'schema': schema}
    if isinstance(kind, str) and kind not in _TYPES:
        d['description'] = kind
    if required:
        d['required'] = True
    return d


def _params(fn, shape):
    """Content descriptors of FN's params: from the informal shape if it
    names them, else from its signature (required: no default)."""
    if isinstance(shape, dict):
        return [_descriptor(n, k) for n, k in shape.items()]
    if isinstance(shape, list):
        return [_descriptor(n) for n in shape if isinstance(n, str)]
    if getattr(fn, '_rrpc_raw_params', False):
        return []
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [_descriptor(p.name, required=p.default is inspect.Parameter.empty)
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def discover_document(service, version, methods, about):
    """The OpenRPC document rpc.discover answers (PROTOCOL.md section 11):
    METHODS {name: fn}, ABOUT {name: (description, shape)} from register().
    The Python peer carries no JSON Schemas: types come from informal
    shapes ({'a': 'number'}) when given."""
    described = []
    for name, fn in methods.items():
        if name == 'rpc.discover':
            continue  # implied, as the OpenRPC spec says
        item = entry(name, fn, *about.get(name, (None, None)))
        method = {'name': name, 'params': _params(fn, item.get('params')),
                  'result': {'name': 'result', 'schema': {}}}
        if 'description' in item:
            method['description'] = item['description']
        described.append(method)
    return {'openrpc': OPENRPC_VERSION, 'info': {'title': service, 'version': version},
            'methods': described}


def _arguments(fn, params):
    if getattr(fn, '_rrpc_raw_params', False):
        return (params,), {}
    if isinstance(params, dict):
        return (), params
    return tuple(params or ()), {}


def invoke(fn, params, name):
    """Runs handler FN on PARAMS; {'result': ...} or {'error': {...}}.
    NAME (service.method) is for the log, where the details of an
    unexpected failure go rather than to the caller."""
    args, kwargs = _arguments(fn, params)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins cannot be inspected
        signature = None
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            return {'error': {'code': INVALID_PARAMS, 'message': f'Invalid params: {exc}'}}
    try:
        return {'result': fn(*args, **kwargs)}
    except RpcError as exc:
        return {'error': exc.to_error()}
    except STOPS:
        raise
    except BaseException:  # GeneratorExit, RecursionError, MemoryError, anything
        # The details go to the log, not to the caller: they may expose internals.
        log.exception('%s failed%s', name, trace.log_suffix(trace.current_traceparent()))
        return {'error': {'code': INTERNAL_ERROR, 'message': 'Internal error'}}
