#!/usr/bin/env node
'use strict';
// calc_client.js -- runs the calc example caller (examples/calc_client.js)
// from a checkout, at the path the tests, scripts and docs use, next to
// clients/python/calc_client.py and clients/ruby/calc_client.rb.
require('./examples/calc_client').main().then((status) => {
  process.exitCode = status;
});
