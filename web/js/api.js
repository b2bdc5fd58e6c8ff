// The REST client: public market data, and the private endpoints authenticated either by a JWT
// from the login endpoint (`Authorization: Bearer`) or by an Ed25519 API key signing each request
// exactly like Backpack's clients (docs/rest-api.md, "How to sign").

/** An error answer of the API: its HTTP status and its `{code, message}`. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0 when the server could not be reached)
   * @param {string} code the API's error code, e.g. "INVALID_ORDER"
   * @param {string} message the API's message, shown to the user as is
   */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * @typedef {object} JwtSession a user logged in with username and password
 * @property {'jwt'} kind
 * @property {string} username
 * @property {string} token the JWT
 * @property {number} expiresAt when the token expires, ms since the epoch (0: unknown)
 * @property {number} issuedAt when the page received it, ms since the epoch
 */

/**
 * @typedef {object} KeySession a user holding an Ed25519 API key
 * @property {'key'} kind
 * @property {string} username shown in the header (the public key, shortened)
 * @property {string} apiKey base64 public key (X-API-Key)
 * @property {CryptoKey} privateKey
 */

/** @typedef {JwtSession | KeySession} Session */

/**
 * @typedef {object} Market an entry of `GET /api/v1/markets`
 * @property {string} symbol
 * @property {string} baseSymbol
 * @property {string} quoteSymbol
 * @property {{price: {tickSize: string, minPrice: string, maxPrice?: string},
 *   quantity: {stepSize: string, minQuantity: string, maxQuantity?: string}}} filters
 */

/**
 * @typedef {object} Order the Order object of the private endpoints
 * @property {string} id
 * @property {string} symbol
 * @property {'Bid' | 'Ask'} side
 * @property {'Limit' | 'Market'} orderType
 * @property {string | null} price
 * @property {string | null} quantity
 * @property {string} executedQuantity
 * @property {string} status `TriggerPending` for a trigger order that has not fired
 * @property {string | null} [triggerPrice] a trigger order's trigger price
 * @property {number} createdAt ms
 */

/** @typedef {Record<string, string | number | boolean>} Params */

/**
 * Sends a request and returns its JSON answer; throws {@link ApiError} on an error answer.
 * @param {string} method
 * @param {string} path including the query string
 * @param {{headers?: Record<string, string>, body?: string}} [options]
 * @returns {Promise<any>}
 */
async function send(method, path, options = {}) {
  let response;
  try {
    response = await fetch(path, { method, headers: options.headers, body: options.body });
  } catch (error) {
    throw new ApiError(0, 'NETWORK', `Cannot reach the exchange (${error instanceof Error ? error.message : error})`);
  }
  const text = await response.text();
  /** @type {any} */
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const code = json && typeof json.code === 'string' ? json.code : `HTTP_${response.status}`;
    const message =
      json && typeof json.message === 'string'
        ? json.message
        : response.status === 404
          ? `Not available on this server (${method} ${path.split('?')[0]})`
          : `HTTP ${response.status} ${response.statusText}`;
    throw new ApiError(response.status, code, message);
  }
  return json;
}

/**
 * @param {Params} params
 * @returns {string} the query string, with a leading "?" when not empty
 */
function query(params) {
  const entries = Object.entries(params).filter(([, value]) => value !== undefined && value !== '');
  return entries.length ? '?' + new URLSearchParams(entries.map(([k, v]) => [k, String(v)])).toString() : '';
}

// ---- Public market data ----

/** @returns {Promise<Market[]>} */
export const markets = () => send('GET', '/api/v1/markets');
/** @param {string} symbol @param {number} [limit] @returns {Promise<import('./book.js').DepthSnapshot>} */
export const depth = (symbol, limit = 1000) => send('GET', '/api/v1/depth' + query({ symbol, limit }));
/**
 * @param {string} symbol
 * @param {number} [limit]
 * @returns {Promise<{id: number, price: string, quantity: string, timestamp: number, isBuyerMaker: boolean}[]>}
 */
export const trades = (symbol, limit = 50) => send('GET', '/api/v1/trades' + query({ symbol, limit }));
/** @param {string} symbol @returns {Promise<any>} */
export const ticker = (symbol) => send('GET', '/api/v1/ticker' + query({ symbol }));
/**
 * @param {string} symbol
 * @param {string} interval
 * @param {number} startTime seconds
 * @returns {Promise<{start: string, open: string, high: string, low: string, close: string, volume: string}[]>}
 */
export const klines = (symbol, interval, startTime) =>
  send('GET', '/api/v1/klines' + query({ symbol, interval, startTime }));
/**
 * @returns {Promise<{symbol: string, tokens: {minimumWithdrawal: string}[]}[]>} the assets (their
 *   smallest unit is the minimum withdrawal's decimals)
 */
export const assets = () => send('GET', '/api/v1/assets');
/**
 * @typedef {object} Pool an entry of `GET /api/v1/amm/pools`
 * @property {string} symbol
 * @property {string} baseSymbol
 * @property {string} quoteSymbol
 * @property {number} feeBps
 * @property {string} baseReserve
 * @property {string} quoteReserve
 * @property {string} totalShares
 * @property {string | null} price
 */
/** @returns {Promise<Pool[]>} */
export const pools = () => send('GET', '/api/v1/amm/pools');
/**
 * A pool quote (`GET /api/v1/amm/quote`) for a base `quantity`.
 * @param {string} symbol
 * @param {'Bid' | 'Ask'} side
 * @param {string} quantity
 * @returns {Promise<{pool: {amountIn?: string, amountOut?: string, fee?: string, price?: string, spotPrice?: string, priceImpact?: string, error?: string}, assetIn: string, assetOut: string}>}
 */
export const ammQuote = (symbol, side, quantity) => send('GET', '/api/v1/amm/quote' + query({ symbol, side, quantity }));
/** @returns {Promise<{demo: boolean}>} what the server serving the page offers */
export const pageConfig = () => send('GET', './config.json');

// ---- Accounts ----

/**
 * Registers a user, then logs in.
 * @param {string} username
 * @param {string} password
 * @returns {Promise<JwtSession>}
 */
export async function register(username, password) {
  await send('POST', '/api/v1/auth/register', jsonBody({ username, password }));
  return login(username, password);
}

/**
 * Logs in with username and password.
 * @param {string} username
 * @param {string} password
 * @returns {Promise<JwtSession>}
 */
export async function login(username, password) {
  const answer = await send('POST', '/api/v1/auth/login', jsonBody({ username, password }));
  const token = typeof answer === 'string' ? answer : (answer?.token ?? answer?.jwt ?? answer?.accessToken ?? answer?.access_token);
  if (typeof token !== 'string') throw new ApiError(500, 'BAD_ANSWER', 'The login answer holds no token');
  return { kind: 'jwt', username, token, expiresAt: Number(answer?.expiresAt ?? 0), issuedAt: Date.now() };
}

/**
 * Renews a session token before it expires (`POST /api/v1/auth/refresh`): the same session with
 * a new token and expiry.
 * @param {JwtSession} session
 * @returns {Promise<JwtSession>}
 */
export async function refresh(session) {
  const answer = await send('POST', '/api/v1/auth/refresh', { headers: { Authorization: `Bearer ${session.token}` } });
  if (typeof answer?.token !== 'string') throw new ApiError(500, 'BAD_ANSWER', 'The refresh answer holds no token');
  return { ...session, token: answer.token, expiresAt: Number(answer.expiresAt ?? 0), issuedAt: Date.now() };
}

/**
 * Makes a session from an Ed25519 secret (the base64 32-byte seed), as held by API users.
 * @param {string} secretBase64
 * @returns {Promise<KeySession>}
 */
export async function keySession(secretBase64) {
  let seed;
  try {
    seed = Uint8Array.from(atob(secretBase64.trim()), (c) => c.charCodeAt(0));
  } catch {
    seed = new Uint8Array();
  }
  if (seed.length !== 32) throw new ApiError(0, 'BAD_KEY', 'The secret must be the base64 of 32 bytes');
  // PKCS#8 wrapper of an Ed25519 seed (RFC 8410).
  const prefix = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
  const pkcs8 = new Uint8Array([...prefix, ...seed]);
  let privateKey;
  try {
    privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, true, ['sign']);
  } catch (error) {
    throw new ApiError(0, 'NO_ED25519', `This browser cannot sign with Ed25519 (${error})`);
  }
  const jwk = await crypto.subtle.exportKey('jwk', privateKey);
  const apiKey = btoa(atob((jwk.x ?? '').replace(/-/g, '+').replace(/_/g, '/')));
  return { kind: 'key', username: `key ${apiKey.slice(0, 8)}…`, apiKey, privateKey };
}

/**
 * @param {Params} params
 * @returns {{headers: Record<string, string>, body: string}}
 */
function jsonBody(params) {
  return { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(params) };
}

/**
 * The authentication headers of a private request.
 * @param {Session} session
 * @param {string} instruction the signing instruction (API-key sessions)
 * @param {Params} params the body's or query's parameters, signed as sent
 * @returns {Promise<Record<string, string>>}
 */
async function authHeaders(session, instruction, params) {
  if (session.kind === 'jwt') return { Authorization: `Bearer ${session.token}` };
  const timestamp = Date.now();
  const window = 5000;
  const signed =
    `instruction=${instruction}` +
    Object.keys(params)
      .sort()
      .map((key) => `&${key}=${params[key]}`)
      .join('') +
    `&timestamp=${timestamp}&window=${window}`;
  const signature = await crypto.subtle.sign({ name: 'Ed25519' }, session.privateKey, new TextEncoder().encode(signed));
  return {
    'X-API-Key': session.apiKey,
    'X-Signature': btoa(String.fromCharCode(...new Uint8Array(signature))),
    'X-Timestamp': String(timestamp),
    'X-Window': String(window),
  };
}

/**
 * A private GET.
 * @param {Session} session
 * @param {string} instruction
 * @param {string} path
 * @param {Params} [params]
 */
async function privateGet(session, instruction, path, params = {}) {
  const clean = Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined && v !== ''));
  return send('GET', path + query(clean), { headers: await authHeaders(session, instruction, clean) });
}

/**
 * A private POST or DELETE with a JSON body.
 * @param {Session} session
 * @param {string} method
 * @param {string} instruction
 * @param {string} path
 * @param {Params} params
 */
async function privateWrite(session, method, instruction, path, params) {
  const body = jsonBody(params);
  return send(method, path, { body: body.body, headers: { ...body.headers, ...(await authHeaders(session, instruction, params)) } });
}

/**
 * @typedef {object} OrderRequest
 * @property {string} symbol
 * @property {'Bid' | 'Ask'} side
 * @property {'Limit' | 'Market'} orderType
 * @property {string} [price]
 * @property {string} [quantity]
 * @property {'GTC' | 'IOC'} [timeInForce]
 * @property {boolean} [postOnly]
 * @property {string} [triggerPrice] a trigger (stop / take-profit) order: placed when the last
 *   trade price crosses it
 * @property {string} [triggerQuantity] a trigger order's quantity (sent instead of `quantity`,
 *   as Backpack's clients do)
 */

/** @param {Session} session @param {OrderRequest} order @returns {Promise<Order>} */
export const placeOrder = (session, order) =>
  privateWrite(session, 'POST', 'orderExecute', '/api/v1/order', /** @type {Params} */ (order));
/** @param {Session} session @param {string} symbol @param {string} orderId @returns {Promise<Order>} */
export const cancelOrder = (session, symbol, orderId) =>
  privateWrite(session, 'DELETE', 'orderCancel', '/api/v1/order', { symbol, orderId });
/**
 * @param {Session} session
 * @param {string} [symbol] one market; absent: all
 * @returns {Promise<Order[]>}
 */
export const openOrders = (session, symbol) => privateGet(session, 'orderQueryAll', '/api/v1/orders', symbol ? { symbol } : {});
/** @param {Session} session @param {string} symbol @returns {Promise<Order[]>} the cancelled orders */
export const cancelAll = (session, symbol) => privateWrite(session, 'DELETE', 'orderCancelAll', '/api/v1/orders', { symbol });
/**
 * The user's orders, open and closed, newest first.
 * @param {Session} session
 * @param {string} [symbol]
 * @returns {Promise<Array<Order & {orderType: string, createdAt: string | number}>>}
 */
export const orderHistory = (session, symbol) =>
  privateGet(session, 'orderHistoryQueryAll', '/wapi/v1/history/orders', symbol ? { symbol, limit: 50 } : { limit: 50 });
/**
 * @param {Session} session
 * @returns {Promise<Record<string, {available: string, locked: string}>>}
 */
export const balances = (session) => privateGet(session, 'balanceQuery', '/api/v1/capital');
/**
 * @param {Session} session
 * @param {string} [symbol]
 * @returns {Promise<{tradeId: number, orderId: string, price: string, quantity: string, side: string,
 *   fee: string, feeSymbol: string, isMaker: boolean, timestamp: string}[]>}
 */
export const fills = (session, symbol) =>
  privateGet(session, 'fillHistoryQueryAll', '/wapi/v1/history/fills', symbol ? { symbol, limit: 50 } : { limit: 50 });
/**
 * Credits test funds (demo servers only).
 * @param {Session} session
 * @returns {Promise<{credited: Record<string, string>}>}
 */
export const faucet = (session) => privateWrite(session, 'POST', 'demoFaucet', '/api/v1/demo/faucet', {});

// ---- AMM pools (docs/amm.md) ----

/**
 * Swaps against a pool: `Bid` receives exactly `quantity` base paying at most `maxAmountIn`
 * quote; `Ask` sells exactly `quantity` base for at least `minAmountOut` quote.
 * @param {Session} session
 * @param {{symbol: string, side: 'Bid' | 'Ask', quantity: string, maxAmountIn?: string, minAmountOut?: string}} swap
 * @returns {Promise<{amountIn: string, amountOut: string, assetIn: string, assetOut: string, fee: string, price: string}>}
 */
export const swap = (session, swap) => privateWrite(session, 'POST', 'swapExecute', '/api/v1/amm/swap', /** @type {Params} */ (swap));
/**
 * @param {Session} session
 * @param {string} symbol
 * @param {string} baseQuantity the most base to deposit
 * @param {string} quoteQuantity the most quote to deposit
 * @returns {Promise<{baseQuantity: string, quoteQuantity: string, shares: string}>}
 */
export const liquidityAdd = (session, symbol, baseQuantity, quoteQuantity) =>
  privateWrite(session, 'POST', 'liquidityAdd', '/api/v1/amm/liquidity', { symbol, baseQuantity, quoteQuantity });
/**
 * @param {Session} session
 * @param {string} symbol
 * @param {string} shares
 * @returns {Promise<{baseQuantity: string, quoteQuantity: string, shares: string}>}
 */
export const liquidityRemove = (session, symbol, shares) =>
  privateWrite(session, 'DELETE', 'liquidityRemove', '/api/v1/amm/liquidity', { symbol, shares });
/**
 * The user's pool shares.
 * @param {Session} session
 * @param {string} symbol
 * @returns {Promise<{symbol: string, shares: string, baseQuantity: string, quoteQuantity: string}[]>}
 */
export const shares = (session, symbol) => privateGet(session, 'liquidityQuery', '/api/v1/amm/shares', { symbol });
