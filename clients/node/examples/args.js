'use strict';
// args.js -- the command-line options of the examples: --name VALUE pairs
// and --flags, as the Ruby and Python examples take them.

/** Parses ARGV by SPEC ({name: 'string'|'number'|'flag'|'list'}); exits 2 on a bad one. */
function parse(argv, spec, usage) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(usage);
      process.exit(0);
    }
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? arg.split(/=(.*)/s) : [arg, undefined];
    const name = flag.replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const kind = flag.startsWith('--') ? spec[name] : undefined;
    if (kind === undefined) {
      process.stderr.write(`unknown option: ${arg}\n${usage}`);
      process.exit(2);
    }
    if (kind === 'flag') {
      out[name] = true;
      continue;
    }
    const value = inline !== undefined ? inline : argv[++i];
    if (value === undefined || (kind === 'number' && !Number.isFinite(Number(value)))) {
      process.stderr.write(`${flag} needs a ${kind === 'number' ? 'number' : 'value'}\n${usage}`);
      process.exit(2);
    }
    if (kind === 'list') (out[name] = out[name] || []).push(value);
    else out[name] = kind === 'number' ? Number(value) : value;
  }
  return out;
}

module.exports = { parse };
