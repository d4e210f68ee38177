/** The browser test behind a real kernel gateway (gateway-tests/, servers.py gateway). */
module.exports = require('./playwright.servers.js')('gateway', '/api');
