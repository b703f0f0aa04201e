// The market page: the symbol list (GET /stocks), and for the chosen symbol a candlestick
// chart (GET /stocks/{symbol}/candles, drawn by the vendored lightweight-charts), the L2
// book and the latest trades live from GET /stocks/{symbol}/stream, the VWAP from
// GET /stocks/{symbol}/price. No network beyond the exchange.
"use strict";

(() => {
  const SYMBOLS_EVERY_MS = 3000; // the contract asks for at least every 5 s
  const PRICE_EVERY_MS = 4000;
  const REOPEN_AFTER_MS = 2000; // when the browser gives up on a stream, try again
  const MAX_TRADES = 50;
  const AFTER_TRADES_MS = 300; // volume and VWAP follow a burst of trades this soon
  const INTERVALS = { "1s": 1, "1m": 60, "5m": 300, "1h": 3600, "1d": 86400 }; // seconds
  const DEFAULT_INTERVAL = "1m";
  const MAX_CANDLES = 300;
  const UP = "#2ebd85";
  const DOWN = "#f6465d";

  const $ = (id) => document.getElementById(id);
  const state = {
    symbol: null, // the chosen symbol
    symbols: [], // the last GET /stocks answer
    source: null, // the EventSource of the chosen symbol
    trades: [], // newest first
    lastBook: new Map(), // "side:price" -> total_quantity, to flash what changed
    reopenTimer: null,
    refreshTimer: null,
    interval: DEFAULT_INTERVAL, // the chart's candle interval
    candles: [], // oldest first, as the chart draws them: {time, open, high, low, close, volume}
    candlesFor: null, // "symbol interval" the candles are of; null while loading
    candlesLoaded: false, // the chosen symbol's candles came from /candles
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
        link.href = pageUrl(entry.symbol, state.interval);
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

  const pageUrl = (symbol, interval) =>
    `/?symbol=${encodeURIComponent(symbol)}&interval=${encodeURIComponent(interval)}`;

  function choose(symbol, { replace = false } = {}) {
    const url = pageUrl(symbol, state.interval);
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
      setCandles([], false);
      for (const id of ["last-price", "vwap", "vwap-trades", "volume"]) $(id).textContent = "";
      setWindow("");
      $("last-price").dataset.value = "";
    }
    renderSummary();
    if (!isListed(symbol)) {
      notice(`Symbol ${symbol} is not listed on this exchange.`);
      closeStream();
      setCandles([], false);
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
      loadCandles(symbol, state.interval);
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
        row.style.setProperty("--depth", (level.total_quantity / deepest).toFixed(3));
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
    chartTrade(trade);
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
        const tick =
          !older || Number(older.price) === Number(trade.price)
            ? ""
            : Number(trade.price) > Number(older.price)
              ? "up"
              : "down";
        const item = element("li", [tick, fresh.has(trade.trade_id) ? "new" : ""].join(" ").trim());
        item.dataset.tradeId = trade.trade_id;
        item.title = trade.executed_at;
        if (tick) item.dataset.tick = tick;
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

  // -- chart ----------------------------------------------------------------------------

  const chart = { api: null, candles: null, volume: null };

  function makeChart() {
    const charts = window.LightweightCharts;
    if (!charts) return; // the library did not load: the rest of the page still works
    chart.api = charts.createChart($("chart"), {
      autoSize: true,
      layout: { background: { color: "transparent" }, textColor: "#8490a6", fontSize: 12 },
      grid: { vertLines: { color: "#1a2132" }, horzLines: { color: "#1a2132" } },
      rightPriceScale: { borderColor: "#222b3d" },
      timeScale: { borderColor: "#222b3d", timeVisible: true, rightOffset: 2 },
      crosshair: { mode: charts.CrosshairMode.Normal },
      localization: { priceFormatter: (value) => value.toFixed(2) },
    });
    chart.candles = chart.api.addSeries(charts.CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderVisible: false,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    chart.candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.28 } });
    chart.volume = chart.api.addSeries(charts.HistogramSeries, {
      priceFormat: { type: "volume" },
      priceScaleId: "volume",
      lastValueVisible: false,
      priceLineVisible: false,
    });
    chart.volume.priceScale().applyOptions({ scaleMargins: { top: 0.78, bottom: 0 } });
  }

  const volumeBar = (candle) => ({
    time: candle.time,
    value: candle.volume,
    color: candle.close >= candle.open ? "rgba(46, 189, 133, 0.45)" : "rgba(246, 70, 93, 0.45)",
  });

  function setCandles(candles, loaded) {
    state.candles = candles;
    state.candlesLoaded = loaded;
    if (chart.api) {
      chart.api.applyOptions({ timeScale: { secondsVisible: state.interval === "1s" } });
      chart.candles.setData(candles.map(({ volume, ...ohlc }) => ohlc));
      chart.volume.setData(candles.map(volumeBar));
      if (candles.length) chart.api.timeScale().scrollToRealTime();
    }
    $("chart-empty").hidden = candles.length > 0 || !loaded;
  }

  const fromCandle = (candle) => ({
    time: Math.floor(Date.parse(candle.start) / 1000),
    open: Number(candle.open),
    high: Number(candle.high),
    low: Number(candle.low),
    close: Number(candle.close),
    volume: Number(candle.volume),
  });

  // A trade into the last candle of `candles`, or a new one when its interval began.
  // Returns the candle it changed, or null for a trade older than the last candle.
  function foldTrade(candles, trade, interval) {
    const seconds = INTERVALS[interval];
    const time = Math.floor(Date.parse(trade.executed_at) / 1000 / seconds) * seconds;
    const value = Number(trade.price);
    const size = Number(trade.quantity);
    const last = candles[candles.length - 1];
    if (last && last.time === time) {
      last.high = Math.max(last.high, value);
      last.low = Math.min(last.low, value);
      last.close = value;
      last.volume += size;
      return last;
    }
    if (last && time < last.time) return null;
    const candle = { time, open: value, high: value, low: value, close: value, volume: size };
    candles.push(candle);
    if (candles.length > MAX_CANDLES) candles.shift();
    return candle;
  }

  async function loadCandles(symbol, interval) {
    const key = `${symbol} ${interval}`;
    // Stream trades are not folded in while the answer is on its way: most are in it.
    state.candlesFor = null;
    const base = `/stocks/${encodeURIComponent(symbol)}`;
    try {
      const body = await getJson(`${base}/candles?interval=${interval}&limit=${MAX_CANDLES}`);
      if (symbol !== state.symbol || interval !== state.interval) return;
      state.candlesFor = key;
      setCandles(body.candles.map(fromCandle), true);
    } catch (error) {
      // The next reconnect or interval change loads them again.
    }
  }

  function chartTrade(trade) {
    if (state.candlesFor !== `${state.symbol} ${state.interval}`) return;
    const candle = foldTrade(state.candles, trade, state.interval);
    if (candle === null || !chart.api) return;
    const { volume, ...ohlc } = candle;
    chart.candles.update(ohlc);
    chart.volume.update(volumeBar(candle));
    $("chart-empty").hidden = true;
  }

  function chooseInterval(interval, { push = true } = {}) {
    if (!(interval in INTERVALS)) interval = DEFAULT_INTERVAL;
    const changed = interval !== state.interval;
    state.interval = interval;
    for (const button of $("intervals").querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.interval === interval));
    }
    if (!changed) return;
    if (push && state.symbol !== null) history.pushState({}, "", pageUrl(state.symbol, interval));
    renderSymbols();
    setCandles([], false);
    if (state.symbol !== null && isListed(state.symbol)) loadCandles(state.symbol, interval);
  }

  $("intervals").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-interval]");
    if (button) chooseInterval(button.dataset.interval);
  });

  // For the browser test: what the chart was given, read back from the library's series.
  window.marketChart = {
    candles: () => (chart.candles ? chart.candles.data().map((bar) => ({ ...bar })) : []),
    volumes: () => (chart.volume ? chart.volume.data().map((bar) => bar.value) : []),
    loaded: () => state.candlesLoaded,
    interval: () => state.interval,
  };

  // -- start ----------------------------------------------------------------------------

  window.addEventListener("popstate", () => {
    const query = new URLSearchParams(location.search);
    chooseInterval(query.get("interval") || DEFAULT_INTERVAL, { push: false });
    const symbol = query.get("symbol");
    if (symbol) show(symbol);
  });

  makeChart();
  const query = new URLSearchParams(location.search);
  state.interval = query.get("interval") in INTERVALS ? query.get("interval") : DEFAULT_INTERVAL;
  chooseInterval(state.interval, { push: false });
  const wanted = query.get("symbol");
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
