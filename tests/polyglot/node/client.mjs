// A Node.js client of Portico, built at run time from the contracts in proto/ with
// @grpc/proto-loader and @grpc/grpc-js (no generated code, no Python).
//
//   node tests/polyglot/node/client.mjs <state file of `portico up`> [--book-seconds N] [--symbol ETH-PERP]
//
// It lists the venue's instruments (ReferenceDataService), streams one order book for a few
// seconds and checks that every DELTA chains onto the update before it and that its checksum
// matches the book held (MarketDataService), then rests a limit buy well under the best bid
// and cancels it (ExecutionService), and prints what it saw as one JSON document on stdout.
// Exit status 0 when every step worked; 1 with a message on stderr otherwise.
// tests/integration/test_polyglot_node.py runs it against `portico up`.

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../proto");
const PROTO_FILES = [
  "portico/refdata/v1/reference_data_service.proto",
  "portico/marketdata/v1/market_data_service.proto",
  "portico/execution/v1/execution_service.proto",
];
const DEADLINE_MS = 15_000;

// --- contracts ---------------------------------------------------------------------------------

function loadContracts() {
  const definition = protoLoader.loadSync(PROTO_FILES, {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto files (snake_case)
    longs: String, // int64 / uint64 as decimal strings: sequences exceed 2^53 on some venues
    enums: String, // enum values by name, e.g. "ORDER_STATE_OPEN"
    defaults: true, // proto3 defaults present on decoded messages
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition);
  return {
    ReferenceDataService: loaded.portico.refdata.v1.ReferenceDataService,
    MarketDataService: loaded.portico.marketdata.v1.MarketDataService,
    ExecutionService: loaded.portico.execution.v1.ExecutionService,
  };
}

// --- calls -------------------------------------------------------------------------------------

/** Per-call metadata carrying a bearer token: Portico's auth between services and clients. */
function bearer(token) {
  const metadata = new grpc.Metadata();
  metadata.add("authorization", `Bearer ${token}`);
  return metadata;
}

/** A unary call as a promise, with a deadline and the bearer token. */
function unary(client, method, request, token) {
  return new Promise((resolvePromise, reject) => {
    client[method](request, bearer(token), { deadline: Date.now() + DEADLINE_MS }, (error, response) => {
      if (error) {
        reject(new Error(`${method}: ${grpc.status[error.code] ?? error.code}: ${error.details}`));
      } else {
        resolvePromise(response);
      }
    });
  });
}

// --- decimals (prices and amounts are decimal strings; never floats) ----------------------------

function decimalPlaces(text) {
  const dot = text.indexOf(".");
  return dot < 0 ? 0 : text.length - dot - 1;
}

/** `text` as a BigInt scaled by 10^scale (scale >= its decimal places). */
function scaled(text, scale) {
  if (!/^\d+(\.\d+)?$/.test(text)) throw new Error(`not a non-negative decimal: ${JSON.stringify(text)}`);
  const [whole, fraction = ""] = text.split(".");
  return BigInt(whole + fraction.padEnd(scale, "0"));
}

function unscaled(value, scale) {
  const digits = value.toString().padStart(scale + 1, "0");
  if (scale === 0) return digits;
  const text = `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  return text.replace(/0+$/, "").replace(/\.$/, "");
}

/** The highest multiple of `tick` at or under `fraction` (e.g. 0.8) of `price`, as a decimal string. */
function onTickUnder(price, fraction, tick) {
  const scale = Math.max(decimalPlaces(price), decimalPlaces(fraction), decimalPlaces(tick));
  const one = 10n ** BigInt(scale);
  const target = (scaled(price, scale) * scaled(fraction, scale)) / one;
  const step = scaled(tick, scale);
  return unscaled((target / step) * step, scale);
}

// --- the order book a consumer holds ------------------------------------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(text) {
  let crc = 0xffffffff;
  for (const byte of Buffer.from(text, "utf8")) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** Both sides keyed by the price's decimal value, keeping the venue's strings (the checksum uses them). */
class HeldBook {
  constructor(depth) {
    this.depth = depth;
    this.bids = new Map();
    this.asks = new Map();
  }

  reset() {
    this.bids.clear();
    this.asks.clear();
  }

  apply(bids, asks) {
    for (const [side, levels] of [[this.bids, bids], [this.asks, asks]]) {
      for (const { price, amount } of levels) {
        const key = Number(price);
        if (Number(amount) === 0) side.delete(key);
        else side.set(key, [price, amount]);
      }
    }
  }

  top(side, descending) {
    const keys = [...side.keys()].sort((a, b) => (descending ? b - a : a - b)).slice(0, this.depth);
    return keys.map((key) => side.get(key));
  }

  checksum() {
    const text = (levels) => levels.map(([price, amount]) => `${price}:${amount}`).join("|");
    return crc32(`b:${text(this.top(this.bids, true))}#a:${text(this.top(this.asks, false))}`);
  }

  bestBid() {
    return this.top(this.bids, true)[0]?.[0] ?? null;
  }

  bestAsk() {
    return this.top(this.asks, false)[0]?.[0] ?? null;
  }
}

/** Stream `symbol`'s book for `seconds`, checking every update; resolves with the tally and the book held. */
function streamBook(client, token, venue, symbol, depth, seconds) {
  const tally = {
    symbol,
    depth,
    seconds,
    messages: 0,
    updates: 0,
    snapshots: 0,
    deltas: 0,
    resyncing: 0,
    stale: 0,
    broken_chains: 0,
    checksum_mismatches: 0,
    problems: [],
    first_sequence: null,
    last_sequence: null,
  };
  const book = new HeldBook(depth);
  let last = null; // the last applied sequence, as a BigInt; null before the first SNAPSHOT
  let epoch = null;
  const problem = (text) => {
    if (tally.problems.length < 10) tally.problems.push(text);
  };

  return new Promise((resolvePromise, reject) => {
    const call = client.StreamOrderBook({ venue, symbol, depth }, bearer(token));
    const timer = setTimeout(() => call.cancel(), seconds * 1000);
    call.on("data", (response) => {
      tally.messages += 1;
      for (const update of response.updates) {
        tally.updates += 1;
        const sequence = BigInt(update.sequence);
        switch (update.type) {
          case "BOOK_EVENT_TYPE_SNAPSHOT":
            tally.snapshots += 1;
            book.reset();
            book.apply(update.bids, update.asks);
            last = sequence;
            epoch = update.epoch;
            break;
          case "BOOK_EVENT_TYPE_DELTA":
            tally.deltas += 1;
            if (last === null || BigInt(update.previous_sequence) !== last || update.epoch !== epoch) {
              tally.broken_chains += 1;
              problem(`delta ${update.sequence} (epoch ${update.epoch}) follows ${update.previous_sequence}, ` +
                      `last applied ${last} (epoch ${epoch})`);
            }
            book.apply(update.bids, update.asks);
            last = sequence;
            break;
          case "BOOK_EVENT_TYPE_RESYNCING":
            tally.resyncing += 1;
            last = null; // nothing chains until the next SNAPSHOT
            continue;
          case "BOOK_EVENT_TYPE_STALE":
            tally.stale += 1;
            continue;
          default:
            problem(`unexpected update type ${update.type}`);
            continue;
        }
        if (book.checksum() !== update.checksum) {
          tally.checksum_mismatches += 1;
          problem(`checksum mismatch at ${update.sequence}: ours ${book.checksum()}, stream ${update.checksum}`);
        }
        tally.first_sequence ??= update.sequence;
        tally.last_sequence = update.sequence;
      }
    });
    call.on("error", (error) => {
      clearTimeout(timer);
      if (error.code === grpc.status.CANCELLED) {
        resolvePromise({ tally, book }); // our own cancel after `seconds`
      } else {
        reject(new Error(`StreamOrderBook: ${grpc.status[error.code] ?? error.code}: ${error.details}`));
      }
    });
    call.on("end", () => {
      clearTimeout(timer);
      reject(new Error("StreamOrderBook: the server ended the stream"));
    });
  });
}

// --- the run -----------------------------------------------------------------------------------

async function listInstruments(client, token, venue) {
  const instruments = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await unary(client, "ListInstruments", { venue, page_size: 100, page_token: pageToken }, token);
    instruments.push(...page.instruments);
    pageToken = page.next_page_token;
    pages += 1;
  } while (pageToken && pages < 1000);
  return { instruments, pages };
}

async function main() {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      "book-seconds": { type: "string", default: "3" },
      symbol: { type: "string", default: "ETH-PERP" },
      depth: { type: "string", default: "10" },
    },
  });
  if (positionals.length !== 1) throw new Error("usage: client.mjs <state file> [--book-seconds N] [--symbol S]");
  const state = JSON.parse(readFileSync(positionals[0], "utf8"));
  const { venue, account } = state.demo;
  const { symbol } = values;
  const contracts = loadContracts();
  const insecure = grpc.credentials.createInsecure();
  const refdata = new contracts.ReferenceDataService(state.services.refdata, insecure);
  const marketdata = new contracts.MarketDataService(state.services.marketdata, insecure);
  const execution = new contracts.ExecutionService(state.services.execution, insecure);
  const summary = { venue, account, symbol };
  try {
    // 1. Reference data: the instruments, and the tick and minimum amount of the one traded below.
    const { instruments, pages } = await listInstruments(refdata, state.tokens.read, venue);
    // Without the bearer token the same call is refused: the token in the metadata is what authorises.
    summary.without_token = await new Promise((done) => {
      refdata.ListInstruments({ venue }, { deadline: Date.now() + DEADLINE_MS },
                              (error) => done(error ? grpc.status[error.code] : "OK"));
    });
    const instrument = instruments.find((i) => i.symbol === symbol);
    if (!instrument) throw new Error(`${symbol} is not among the ${instruments.length} instruments listed`);
    summary.instruments = {
      listed: instruments.length,
      pages,
      symbols: instruments.map((i) => i.symbol),
      [symbol]: {
        price_increment: instrument.price_increment,
        min_trade_amount: instrument.min_trade_amount,
        amount_increment: instrument.amount_increment,
        active: instrument.active,
      },
    };

    // 2. Market data: a few seconds of the live book, every update checked.
    const seconds = Number(values["book-seconds"]);
    const { tally, book } = await streamBook(marketdata, state.tokens.read, venue, symbol,
                                             Number(values.depth), seconds);
    summary.book = { ...tally, best_bid: book.bestBid(), best_ask: book.bestAsk() };
    if (book.bestBid() === null) throw new Error(`the ${symbol} book held has no bid to price under`);

    // 3. Execution: a post-only limit buy 20% under the best bid (it rests), then cancel it.
    const price = onTickUnder(book.bestBid(), "0.8", instrument.price_increment);
    const clientOrderId = `node-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
    const placed = (await unary(execution, "PlaceOrder", {
      venue,
      account,
      symbol,
      side: "SIDE_BUY",
      type: "ORDER_TYPE_LIMIT",
      amount: instrument.min_trade_amount,
      price,
      time_in_force: "TIME_IN_FORCE_GOOD_TIL_CANCELLED",
      post_only: true,
      client_order_id: clientOrderId,
      label: "polyglot-node",
    }, state.tokens.trade)).order;
    const isOurs = (o) => o.order_id === placed.order_id;
    const openBefore = (await unary(execution, "ListOpenOrders", { venue, account, symbol }, state.tokens.read)).orders;
    const cancelled = (await unary(execution, "CancelOrder", { venue, account, order_id: placed.order_id },
                                   state.tokens.trade)).order;
    const openAfter = (await unary(execution, "ListOpenOrders", { venue, account, symbol }, state.tokens.read)).orders;
    summary.order = {
      client_order_id: clientOrderId,
      order_id: placed.order_id,
      echoed_client_order_id: placed.client_order_id,
      price: placed.price,
      amount: placed.amount,
      requested_price: price,
      requested_amount: instrument.min_trade_amount,
      placed_state: placed.state,
      open_before_cancel: openBefore.some(isOurs),
      cancelled_state: cancelled.state,
      open_after_cancel: openAfter.some(isOurs),
    };
  } finally {
    for (const client of [refdata, marketdata, execution]) client.close();
  }
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
}

main().catch((error) => {
  process.stderr.write(`client.mjs: ${error.message}\n`);
  process.exitCode = 1;
});
