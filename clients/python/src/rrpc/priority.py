"""priority.py -- call priorities (PROTOCOL.md 7, "priority"): the values,
the lists a request list L has for them, the script that pushes high and
low, and the check a worker makes of a received request's member.

A call with a priority of high or low goes through PRIORITY_SCRIPT, which
uses the priority lists only when L has a backlog: a call that finds none
goes straight onto L, where any idle worker (a reliable-mode one blocked
on L alone included) takes it at once.  Workers pop {L}:high, L, {L}:low in
that order, so a backlog is served in priority order (strictly: low waits
while high is never empty).
"""

PRIORITIES = ('high', 'normal', 'low')

# The push script of the protocol, byte for byte (the same text in every
# peer; tests/unit/check_scripts.py compares the copies).
# KEYS = [L, {L}:high, {L}:low], ARGV = [request text, 'high' | 'low'].
PRIORITY_SCRIPT = """\
local p = ARGV[#ARGV]
local q = KEYS[1]
if p == 'high' then
  if redis.call('LLEN', KEYS[1]) > 0 then q = KEYS[2] end
else
  if redis.call('LLEN', KEYS[1]) > 0 or redis.call('LLEN', KEYS[2]) > 0
     or redis.call('LLEN', KEYS[3]) > 0 then q = KEYS[3] end
end
return redis.call('RPUSH', q, unpack(ARGV, 1, #ARGV - 1))
"""


def lists(queue):
    """The lists a worker of QUEUE pops, in priority order: high, normal, low."""
    return ['{%s}:high' % queue, queue, '{%s}:low' % queue]


def script_keys(queue):
    """PRIORITY_SCRIPT's KEYS for QUEUE: L, {L}:high, {L}:low."""
    return [queue, '{%s}:high' % queue, '{%s}:low' % queue]


def checked(priority):
    """PRIORITY as a caller passed it (None: normal), or ValueError."""
    if priority is None or priority in PRIORITIES and isinstance(priority, str):
        return priority
    raise ValueError(f'rrpc: priority must be "high", "normal" or "low", not {priority!r}')


def checked_tenant(tenant):
    """TENANT as a caller passed it (None: none), or ValueError."""
    if tenant is None or isinstance(tenant, str) and tenant:
        return tenant
    raise ValueError(f'rrpc: tenant must be a non-empty string, not {tenant!r}')


def bad_member(req):
    """The -32600 error of a request whose priority member is present but
    not one of the three strings, else None."""
    if 'priority' not in req or req['priority'] in PRIORITIES and isinstance(req['priority'], str):
        return None
    return {'code': -32600, 'message': 'Invalid Request: priority must be "high", "normal" or "low"',
            'data': {'member': 'priority'}}
