#!/usr/bin/env node
'use strict';
// calc_server.js -- runs the calc example service (examples/calc_server.js)
// from a checkout, at the path the tests, scripts and docs use, next to
// clients/python/calc_server.py and clients/ruby/calc_server.rb.
require('./examples/calc_server').main().then((status) => {
  process.exitCode = status;
});
