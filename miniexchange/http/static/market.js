// The market page: the symbol list (GET /stocks), and for the chosen symbol the L2 book
// and the latest trades live from GET /stocks/{symbol}/stream, the VWAP from
// GET /stocks/{symbol}/price. Plain JavaScript, no library, no network beyond the exchange.
"use strict";

(() => {
  const SYMBOLS_EVERY_MS = 3000; // the contract asks for at least every 5 s
  const PRICE_EVERY_MS = 4000;
  const REOPEN_AFTER_MS = 2000; // when the browser gives up on a stream, try again
  const MAX_TRADES = 50;
  const AFTER_TRADES_MS = 300; // volume and VWAP follow a burst of trades this soon

  const $ = (id) => document.getElementById(id);
  const state = {
    symbol: null, // the chosen symbol
    symbols: [], // the last GET /stocks answer
    source: null, // the EventSource of the chosen symbol
    trades: [], // newest first
    lastBook: new Map(), // "side:price" -> total_quantity, to flash what changed
    reopenTimer: null,
    refreshTimer: null,
  };

  // -- formatting -----------------------------------------------------------------

  const price = (value) => (value === null || value === undefined ? "—" : Number(value).toFixed(2));
  const quantity = (value) =>
    value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
  const clockTime = (iso) => (iso ? iso.slice(11, 19) : ""); // the contract's UTC "…THH:MM:SSZ"

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function getJson(path) {
    const response = await fetch(path, { cache: "no-store" });
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.json();
  }

  function setStatus(kind, text) {
    const status = $("status");
    status.dataset.state = kind;
    status.textContent = text || kind;
  }

  function notice(text) {
    const node = $("notice");
    node.hidden = !text;
    node.textContent = text || "";
  }

  // -- symbols ----------------------------------------------------------------------

  async function refreshSymbols() {
    try {
      const body = await getJson("/stocks");
      state.symbols = body.symbols;
      renderSymbols();
      if (state.symbol === null && state.symbols.length) {
        choose(state.symbols[0].symbol, { replace: true });
      } else if (state.symbol !== null) {
        renderSummary();
        if (!state.source && isListed(state.symbol)) choose(state.symbol, { replace: true });
      }
    } catch (error) {
      setStatus("offline", "exchange unreachable");
    }
  }

  const isListed = (symbol) => state.symbols.some((entry) => entry.symbol === symbol);

  function renderSymbols() {
    const list = $("symbols");
    list.replaceChildren(
      ...state.symbols.map((entry) => {
        const link = element("a");
        link.href = `/?symbol=${encodeURIComponent(entry.symbol)}`;
        link.dataset.symbol = entry.symbol;
        if (entry.symbol === state.symbol) link.setAttribute("aria-current", "page");
        link.append(element("span", "ticker", entry.symbol), element("span", "price", price(entry.last_price)));
        link.addEventListener("click", (event) => {
          event.preventDefault();
          choose(entry.symbol);
        });
        const item = element("li");
        item.append(link);
        return item;
      }),
    );
    $("symbols-empty").hidden = state.symbols.length > 0;
  }

  function renderSummary() {
    const entry = state.symbols.find((candidate) => candidate.symbol === state.symbol);
    if (!entry) return;
    const last = $("last-price");
    const previous = last.dataset.value;
    last.textContent = price(entry.last_price);
    if (previous && entry.last_price !== null && Number(previous) !== Number(entry.last_price)) {
      last.className = `last-price ${Number(entry.last_price) > Number(previous) ? "up" : "down"}`;
    }
    last.dataset.value = entry.last_price ?? "";
    $("volume").textContent = quantity(entry.volume);
  }

  // -- the chosen symbol --------------------------------------------------------------

  function choose(symbol, { replace = false } = {}) {
    const url = `/?symbol=${encodeURIComponent(symbol)}`;
    if (replace) history.replaceState({ symbol }, "", url);
    else if (symbol !== state.symbol) history.pushState({ symbol }, "", url);
    show(symbol);
  }

  function show(symbol) {
    const changed = symbol !== state.symbol;
    state.symbol = symbol;
    document.title = `${symbol} · miniexchange`;
    $("symbol-name").textContent = symbol;
    renderSymbols();
    if (changed) {
      state.trades = [];
      state.lastBook = new Map();
      renderTrades(new Set());
      renderBook({ bids: [], asks: [], spread: null, snapshot_at: "" });
      for (const id of ["last-price", "vwap", "vwap-trades", "volume"]) $(id).textContent = "";
      setWindow("");
      $("last-price").dataset.value = "";
    }
    renderSummary();
    if (!isListed(symbol)) {
      notice(`Symbol ${symbol} is not listed on this exchange.`);
      closeStream();
      return;
    }
    notice("");
    if (changed || !state.source) openStream(symbol);
    refreshPrice();
  }

  function closeStream() {
    clearTimeout(state.reopenTimer);
    if (state.source) state.source.close();
    state.source = null;
  }

  function openStream(symbol) {
    closeStream();
    const source = new EventSource(`/stocks/${encodeURIComponent(symbol)}/stream`);
    state.source = source;
    setStatus("connecting");
    const current = () => source === state.source;
    source.addEventListener("open", () => {
      if (!current()) return;
      setStatus("live");
      loadTrades(symbol); // fill what a reconnect missed; the stream's first book replaces ours
    });
    source.addEventListener("book", (event) => {
      if (current()) renderBook(JSON.parse(event.data));
    });
    source.addEventListener("trade", (event) => {
      if (current()) addTrade(JSON.parse(event.data));
    });
    source.addEventListener("error", () => {
      if (!current()) return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser stopped retrying (the server refused or went away): retry ourselves.
        setStatus("offline", "reconnecting…");
        state.reopenTimer = setTimeout(() => current() && openStream(symbol), REOPEN_AFTER_MS);
      } else {
        setStatus("connecting", "reconnecting…");
      }
    });
  }

  // -- book ---------------------------------------------------------------------------

  function renderBook(book) {
    const all = book.bids.concat(book.asks);
    const deepest = Math.max(1, ...all.map((level) => level.total_quantity));
    const seen = new Map();
    const rows = (side, levels) => {
      if (!levels.length) return [element("p", "empty", side === "ask" ? "No asks" : "No bids")];
      return levels.map((level) => {
        const key = `${side}:${level.price}`;
        seen.set(key, level.total_quantity);
        const row = element("div", "level");
        row.dataset.price = price(level.price);
        row.style.setProperty("--depth", `${((100 * level.total_quantity) / deepest).toFixed(1)}%`);
        if (state.lastBook.size && state.lastBook.get(key) !== level.total_quantity) row.classList.add("changed");
        row.append(
          element("span", "price", price(level.price)),
          element("span", "quantity", quantity(level.total_quantity)),
          element("span", "orders", String(level.order_count)),
        );
        return row;
      });
    };
    $("asks").replaceChildren(...rows("ask", book.asks.slice().reverse())); // best ask next to the spread
    $("bids").replaceChildren(...rows("bid", book.bids));
    state.lastBook = seen;
    const spread = price(book.spread);
    $("book-spread").textContent = spread;
    $("spread").textContent = spread;
    $("best-bid").textContent = book.bids.length ? price(book.bids[0].price) : "—";
    $("best-ask").textContent = book.asks.length ? price(book.asks[0].price) : "—";
    $("book-time").textContent = book.snapshot_at ? `as of ${clockTime(book.snapshot_at)} UTC` : "";
  }

  // -- trades -------------------------------------------------------------------------

  async function loadTrades(symbol) {
    const since = state.trades.length ? state.trades[0].trade_id : null;
    try {
      const body = await getJson(`/stocks/${encodeURIComponent(symbol)}/trades?limit=${MAX_TRADES}`);
      if (symbol !== state.symbol) return;
      const tape = body.trades;
      const known = new Set(tape.map((trade) => trade.trade_id));
      // Stream trades that arrived after this request left are newer than the tape.
      const newer = [];
      for (const trade of state.trades) {
        if (trade.trade_id === since || known.has(trade.trade_id)) break;
        newer.push(trade);
      }
      const before = new Set(state.trades.map((trade) => trade.trade_id));
      state.trades = newer.concat(tape).slice(0, MAX_TRADES);
      renderTrades(new Set(state.trades.map((t) => t.trade_id).filter((id) => before.size && !before.has(id))));
    } catch (error) {
      // The stream goes on; the next reconnect loads the tape again.
    }
  }

  function addTrade(trade) {
    if (state.trades.some((known) => known.trade_id === trade.trade_id)) return;
    state.trades.unshift(trade);
    state.trades.length = Math.min(state.trades.length, MAX_TRADES);
    renderTrades(new Set([trade.trade_id]));
    const last = $("last-price");
    const previous = last.dataset.value;
    last.textContent = price(trade.price);
    if (previous && Number(previous) !== Number(trade.price)) {
      last.className = `last-price ${Number(trade.price) > Number(previous) ? "up" : "down"}`;
    }
    last.dataset.value = trade.price;
    // Volume and VWAP come from their endpoints: read them again once the burst is over.
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(() => {
      refreshSymbols();
      refreshPrice();
    }, AFTER_TRADES_MS);
  }

  function renderTrades(fresh) {
    const trades = state.trades;
    $("trades").replaceChildren(
      ...trades.map((trade, index) => {
        const older = trades[index + 1];
        const tick = !older || older.price === trade.price ? "" : trade.price > older.price ? "up" : "down";
        const item = element("li", [tick, fresh.has(trade.trade_id) ? "new" : ""].join(" ").trim());
        item.dataset.tradeId = trade.trade_id;
        item.title = trade.executed_at;
        item.append(
          element("span", "time", clockTime(trade.executed_at)),
          element("span", "price", price(trade.price)),
          element("span", "quantity", quantity(trade.quantity)),
        );
        return item;
      }),
    );
    $("trades-empty").hidden = trades.length > 0;
  }

  // -- VWAP -----------------------------------------------------------------------------

  async function refreshPrice() {
    const symbol = state.symbol;
    if (symbol === null || !isListed(symbol)) return;
    try {
      const body = await getJson(`/stocks/${encodeURIComponent(symbol)}/price`);
      if (symbol !== state.symbol) return;
      $("vwap").textContent = price(body.current_price);
      setWindow(body.window);
      $("vwap-trades").textContent = quantity(body.trades_in_window);
    } catch (error) {
      // Shown again at the next refresh.
    }
  }

  function setWindow(text) {
    for (const node of document.querySelectorAll(".vwap-window")) node.textContent = text;
  }

  // -- start ----------------------------------------------------------------------------

  window.addEventListener("popstate", () => {
    const symbol = new URLSearchParams(location.search).get("symbol");
    if (symbol) show(symbol);
  });

  const wanted = new URLSearchParams(location.search).get("symbol");
  if (wanted) {
    state.symbol = wanted;
    $("symbol-name").textContent = wanted;
  }
  renderTrades(new Set());
  refreshSymbols().then(() => {
    if (wanted && !state.source) show(wanted);
  });
  setInterval(refreshSymbols, SYMBOLS_EVERY_MS);
  setInterval(refreshPrice, PRICE_EVERY_MS);
})();
