/** The browser test through a real JupyterHub (hub-tests/, servers.py hub). */
module.exports = require('./playwright.servers.js')('hub', '/hub-prefix/hub/health');
