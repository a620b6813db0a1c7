const { createClient } = require('redis');
(async () => {
  const c = createClient({ url: 'redis://127.0.0.1:1', RESP: 2, disableOfflineQueue: true,
    socket: { reconnectStrategy: (n, e) => { console.log('strategy', n, e && e.message); return Math.min(100 * 2 ** n, 1000); } } });
  c.on('error', (e) => console.log('error event', e.constructor.name, e.message));
  const t = Date.now();
  const p = c.connect().then(() => console.log('connected'), (e) => console.log('connect rejected', e.constructor.name, e.message, Date.now() - t));
  await new Promise((r) => setTimeout(r, 1500));
  try { await c.sendCommand(['PING']); } catch (e) { console.log('ping', e.constructor.name, e.message); }
  console.log('isOpen', c.isOpen, 'isReady', c.isReady);
  c.destroy();
  await p;
  const d = createClient({ url: 'redis://:wrong@127.0.0.1:' + process.argv[2], RESP: 2, disableOfflineQueue: true });
  d.on('error', (e) => console.log('d error event', e.constructor.name, e.message));
  try { await d.connect(); console.log('d connected'); } catch (e) { console.log('d connect rejected', e.constructor.name, e.message); }
  console.log('d open', d.isOpen);
  try { d.destroy(); } catch (e) { console.log('destroy', e.message); }
})();
