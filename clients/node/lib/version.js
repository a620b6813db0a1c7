'use strict';
// version.js -- the Node peer's version: package.json's, which a test
// (test/package.test.js) and tests/unit/test_version.sh hold equal to the
// repository's VERSION file, the one place a release changes.

const { version } = require('../package.json');

module.exports = { VERSION: version };
