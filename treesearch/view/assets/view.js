// treesearch view: one problem's search tree on a canvas, with a picker across the run's
// problems. The data is the JSON element #data. Text from it (steps, answers, the question)
// came from a model: it goes into the page through textContent only, never as HTML.
"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("data").textContent);
  const $ = (id) => document.getElementById(id);
  const canvas = $("tree");
  const ctx = canvas.getContext("2d");
  const LEVEL = 150; // world units between depths
  const ROW = 18; // world units between leaves
  const KIND_COLOURS = { kept: "#4a7ab5", pruned: "#b8b8b8", dead_end: "#333333", answered: "#2a9d3a" };
  const KIND_NAMES = { kept: "kept (expanded)", pruned: "pruned (open leaf)", dead_end: "dead end", answered: "answered" };
  const CHOSEN = "#e0a100";
  const SELECTED = "#1565c0";
  const layouts = new Map();
  let problem = null; // DATA.problems[i]
  let tree = null; // its layout (prepare)
  let view = { x: 0, y: 0, kx: 1, ky: 1 }; // depth and leaves scale apart: trees are wide, not deep
  let selected = 0;
  let playing = false;
  let queued = false;

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function fields(list, pairs) {
    list.replaceChildren();
    for (const [name, value] of pairs) {
      if (value === null || value === undefined || value === "") continue;
      list.append(element("dt", name), element("dd", value));
    }
  }

  const round = (value) => (value === null || value === undefined ? null : Number(value.toFixed(3)));

  function comparePositions(a, b) {
    // "0/0.10" after "0/0.2": the parts are numbers
    const x = a.split(/[/.]/).map(Number);
    const y = b.split(/[/.]/).map(Number);
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  }

  // Loops, not Math.min(...values): a spread of 200,000 values overflows the call stack.
  function domain(values, probabilities) {
    let [lo, hi] = [Infinity, -Infinity];
    for (const value of values) {
      if (typeof value !== "number" || !Number.isFinite(value)) continue;
      if (value < lo) lo = value;
      if (value > hi) hi = value;
    }
    if (lo > hi) return [0, 1];
    if (probabilities && lo >= 0 && hi <= 1) [lo, hi] = [0, 1];
    return hi > lo ? [lo, hi] : [lo, lo + 1];
  }

  // The layout, once per problem: depth across; leaves down in tree position order (an order
  // no scheduling changes), each parent level with the middle of its children. A parent that
  // is not an earlier node is dropped (treesearch view refuses such trees): then following
  // parents always ends, at node 0 or a node without one.
  function prepare(nodes) {
    const n = nodes.length;
    const kids = nodes.map(() => []);
    nodes.forEach((node, index) => {
      const parent = node.parent;
      if (Number.isInteger(parent) && parent >= 0 && parent < index) kids[parent].push(index);
      else node.parent = null;
    });
    for (const list of kids) list.sort((a, b) => comparePositions(nodes[a].position, nodes[b].position));
    const x = new Float64Array(n);
    const y = new Float64Array(n);
    const subtree = new Float64Array(n);
    let row = 0;
    const stack = [[0, false]];
    while (stack.length) {
      const [id, done] = stack.pop();
      const children = kids[id];
      if (!children.length) y[id] = ROW * row++;
      else if (done) y[id] = (y[children[0]] + y[children[children.length - 1]]) / 2;
      else {
        stack.push([id, true]);
        for (let i = children.length - 1; i >= 0; i--) stack.push([children[i], false]);
      }
    }
    let depth = 0;
    for (const node of nodes) {
      x[node.id] = node.depth * LEVEL;
      subtree[node.id] = node.tokens;
      depth = Math.max(depth, node.depth);
    }
    for (let i = n - 1; i > 0; i--) if (nodes[i].parent !== null) subtree[nodes[i].parent] += subtree[i]; // parents come first
    const kinds = nodes.map((node) =>
      node.status === "answered" || node.status === "dead_end" ? node.status : kids[node.id].length ? "kept" : "pruned");
    return {
      nodes, kids, x, y, subtree, kinds, depth, rows: Math.max(row, 1),
      score: domain(nodes.map((node) => node.score), true),
      confidence: domain(nodes.map((node) => node.confidence), false),
    };
  }

  function chosenPaths() {
    const marked = new Uint8Array(tree.nodes.length);
    for (const id of problem.chosen) {
      if (!Number.isInteger(id) || id < 0 || id >= marked.length) continue; // treesearch view drops them
      for (let v = id; v !== null && v < marked.length && !marked[v]; v = tree.nodes[v].parent) marked[v] = 1;
    }
    return marked;
  }

  // Which nodes show: arrived by the replay's node, within the depth, scored at least the
  // minimum (unscored nodes pass), and their parent showing.
  function shown() {
    const last = Number($("replay").value);
    const depth = Number($("depth").value);
    const min = Number($("min-score").value);
    const visible = new Uint8Array(tree.nodes.length);
    let count = 0;
    for (let i = 0; i <= last && i < tree.nodes.length; i++) {
      const node = tree.nodes[i];
      if (i > 0 && (node.parent === null || !visible[node.parent])) continue;
      if (node.depth > depth || (node.score !== null && node.score < min - 1e-12)) continue;
      visible[i] = 1;
      count++;
    }
    return { visible, count };
  }

  function colour(id, mode) {
    const node = tree.nodes[id];
    if (mode === "status") return KIND_COLOURS[tree.kinds[id]];
    const value = node[mode];
    if (value === null) return "#9e9e9e";
    const [lo, hi] = tree[mode];
    const t = Math.min(1, Math.max(0, (value - lo) / (hi - lo)));
    return `hsl(${Math.round(t * 24) * 5}, 70%, 42%)`; // 25 hues: few distinct looks to draw
  }

  const screenX = (id) => tree.x[id] * view.kx + view.x;
  const screenY = (id) => tree.y[id] * view.ky + view.y;

  function schedule() {
    if (!queued) {
      queued = true;
      requestAnimationFrame(draw);
    }
  }

  function draw() {
    queued = false;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const total = tree ? tree.nodes.length : 0;
    const { visible, count } = tree ? shown() : { visible: new Uint8Array(0), count: 0 };
    if (tree) {
      const marked = tree.marked;
      const path = new Uint8Array(total);
      for (let v = selected; v !== null && v < total; v = tree.nodes[v].parent) path[v] = 1;
      for (const [which, style, lineWidth] of [[0, "#c9ced6", 1], [marked, CHOSEN, 3.5], [path, SELECTED, 2]]) {
        ctx.beginPath();
        for (let i = 1; i < total; i++) {
          if (!visible[i] || (which && !which[i]) || tree.nodes[i].parent === null) continue;
          const p = tree.nodes[i].parent;
          const [x0, y0, x1, y1] = [screenX(p), screenY(p), screenX(i), screenY(i)];
          const middle = (x0 + x1) / 2;
          ctx.moveTo(x0, y0);
          ctx.bezierCurveTo(middle, y0, middle, y1, x1, y1);
        }
        ctx.strokeStyle = style;
        ctx.lineWidth = lineWidth;
        ctx.stroke();
      }
      const r = Math.max(2, Math.min(7, ROW * view.ky * 0.35));
      const labels = ROW * view.ky >= 12;
      ctx.font = "12px system-ui, sans-serif";
      ctx.textBaseline = "middle";
      // Shapes of one look share a path, so 5,000 nodes cost a few dozen fills, not 5,000.
      const looks = new Map();
      const mode = $("colour").value;
      const rings = { [CHOSEN]: new Path2D(), [SELECTED]: new Path2D() };
      const shape = (path, x, y, radius, square) => {
        if (square) path.rect(x - radius, y - radius, 2 * radius, 2 * radius);
        else {
          path.moveTo(x + radius, y);
          path.arc(x, y, radius, 0, 2 * Math.PI);
        }
      };
      for (let i = 0; i < total; i++) {
        if (!visible[i]) continue;
        const [x, y] = [screenX(i), screenY(i)];
        const kind = tree.kinds[i];
        const pruned = kind === "pruned";
        const hue = colour(i, mode);
        const look = pruned ? `#ffffff|${hue}|1.5` : `${hue}|#00000055|1`;
        if (!looks.has(look)) looks.set(look, new Path2D());
        shape(looks.get(look), x, y, kind === "answered" ? r * 1.3 : r, kind === "dead_end");
        if (i === selected || problem.chosenSet.has(i)) shape(rings[i === selected ? SELECTED : CHOSEN], x, y, r * 1.3 + 3);
        if (labels && y > -20 && y < height + 20 && x > -400 && x < width) {
          const node = tree.nodes[i];
          const label = node.answer !== null ? `→ ${node.answer}` : i > 0 && ROW * view.ky >= 20 ? node.text : "";
          if (label) {
            ctx.fillStyle = node.answer !== null ? "#111" : "#777";
            ctx.fillText(label.replace(/\s+/g, " ").slice(0, 48), x + r * 1.3 + 5, y);
          }
        }
      }
      for (const [look, path] of looks) {
        const [fill, stroke, lineWidth] = look.split("|");
        ctx.fillStyle = fill;
        ctx.fill(path);
        ctx.strokeStyle = stroke;
        ctx.lineWidth = Number(lineWidth);
        ctx.stroke(path);
      }
      ctx.lineWidth = 2;
      for (const [style, path] of Object.entries(rings)) {
        ctx.strokeStyle = style;
        ctx.stroke(path);
      }
    }
    canvas.dataset.drawn = String(count);
    canvas.dataset.nodes = String(total);
    $("counts").textContent = tree ? `${count} of ${total} nodes shown` : "";
    if (!document.body.dataset.firstDrawMs) document.body.dataset.firstDrawMs = performance.now().toFixed(1);
  }

  function fit() {
    if (!tree) return;
    const pad = 30;
    const width = Math.max(canvas.clientWidth - 2 * pad - 160, 10); // room for answer labels
    const height = Math.max(canvas.clientHeight - 2 * pad, 10);
    const spanX = Math.max(tree.depth * LEVEL, 1);
    const spanY = Math.max((tree.rows - 1) * ROW, 1);
    view.kx = Math.min(width / spanX, 2);
    view.ky = Math.min(height / spanY, 2);
    view.x = pad + (width - spanX * view.kx) / 2;
    view.y = pad + (height - spanY * view.ky) / 2;
    schedule();
  }

  function select(id) {
    selected = id;
    const node = tree.nodes[id];
    const usage = tree.subtree[id];
    $("node-title").textContent = id === 0 ? "The problem (node 0)" : `Node ${id}`;
    fields($("node-fields"), [
      ["status", KIND_NAMES[tree.kinds[id]]],
      ["depth", node.depth],
      ["path score", round(node.score)],
      ["step scores", node.scores.length ? node.scores.map(round).join(", ") : null],
      ["confidence", round(node.confidence)],
      ["answer", node.answer],
      ["chosen answer's path", tree.marked[id] ? "yes" : null],
      ["step tokens", node.tokens],
      ["reasoning tokens", node.reasoning],
      ["requests", node.requests > 1 ? node.requests : null],
      ["tokens below", usage],
      ["finish reason", node.finish],
      ["position", node.position],
    ]);
    $("node-text").textContent = node.text;
    $("thinking").hidden = node.thinking === null || node.thinking === undefined;
    $("node-thinking").textContent = node.thinking || "";
    const steps = [];
    for (let v = id; v !== null && v > 0; v = tree.nodes[v].parent) steps.push(v);
    const list = $("path-text");
    list.replaceChildren(); // a loop, not a spread: a path may be deeper than the stack
    for (let i = steps.length - 1; i >= 0; i--) list.append(element("li", tree.nodes[steps[i]].text, i === 0 ? "selected" : undefined));
    schedule();
  }

  function showProblem(index) {
    problem = DATA.problems[index];
    if (!layouts.has(index)) layouts.set(index, problem.nodes.length ? prepare(problem.nodes) : null);
    tree = layouts.get(index);
    problem.chosenSet = new Set(problem.chosen);
    document.body.dataset.problem = problem.id;
    const row = problem.row || {};
    const usage = row.usage || {};
    fields($("summary"), [
      ["answer", row.answer === null ? "none" : row.answer],
      ["gold", row.gold],
      ["correct", row.correct === true ? "yes" : row.correct === false ? "no" : null],
      ["strategy", row.strategy],
      ["stopped by", row.stopped_by],
      ["aggregated by", row.aggregated_by],
      ["candidates", row.candidates ? row.candidates.length : null],
      ["prompt tokens", usage.prompt_tokens],
      ["completion tokens", usage.completion_tokens],
      ["verifier tokens", usage.verifier_tokens],
      ["reasoning tokens", usage.reasoning_tokens],
      ["requests", usage.requests],
      ["error", row.error],
      ["nodes", problem.nodes.length],
    ]);
    $("note").hidden = !problem.note;
    $("note").textContent = problem.note || "";
    const finished = $("finished");
    finished.replaceChildren();
    for (const id of ["node-fields", "path-text"]) $(id).replaceChildren();
    $("node-text").textContent = "";
    $("thinking").hidden = true;
    if (!tree) {
      draw();
      return;
    }
    tree.marked = chosenPaths();
    const n = tree.nodes.length;
    $("depth").max = String(tree.depth);
    $("replay").max = String(n - 1);
    [$("min-score").min, $("min-score").max] = tree.score.map(String);
    $("depth").value = String(tree.depth);
    $("replay").value = String(n - 1);
    $("min-score").value = String(tree.score[0]);
    const answered = tree.nodes.filter((node) => node.answer !== null);
    answered.sort((a, b) => (problem.chosenSet.has(b.id) - problem.chosenSet.has(a.id)) || ((b.score ?? -Infinity) - (a.score ?? -Infinity)));
    const LISTED = 300;
    for (const node of answered.slice(0, LISTED)) {
      const button = element("button", `${node.answer}  · score ${round(node.score) ?? "–"} · node ${node.id}`);
      button.type = "button";
      button.addEventListener("click", () => select(node.id));
      finished.append(element("li", undefined, problem.chosenSet.has(node.id) ? "chosen" : undefined));
      finished.lastChild.append(button);
    }
    if (answered.length > LISTED) finished.append(element("li", `… and ${answered.length - LISTED} more`));
    outputs();
    legend();
    select(0);
    fit();
  }

  function legend() {
    const box = $("legend");
    box.replaceChildren();
    const mode = $("colour").value;
    const swatch = (colour, text) => {
      const span = element("span");
      const mark = element("i");
      mark.style.background = colour;
      span.append(mark, text);
      box.append(span);
    };
    if (mode === "status") for (const kind of Object.keys(KIND_COLOURS)) swatch(KIND_COLOURS[kind], KIND_NAMES[kind]);
    else if (tree) {
      const [lo, hi] = tree[mode];
      swatch("hsl(0, 70%, 42%)", `${mode} ${round(lo)}`);
      swatch("hsl(120, 70%, 42%)", `${round(hi)}`);
      swatch("#9e9e9e", "none");
    }
    box.append(element("p", "○ pruned (open leaf) · ■ dead end · big ● answered; gold: the chosen answer's paths; blue: the selected path"));
  }

  function outputs() {
    if (!tree) return;
    $("depth-out").textContent = $("depth").value;
    $("min-score-out").textContent = String(round(Number($("min-score").value)));
    $("replay-out").textContent = `node ${$("replay").value} of ${tree.nodes.length - 1}`;
  }

  function play() {
    const replay = $("replay");
    if (playing) {
      playing = false;
    } else {
      if (Number(replay.value) >= Number(replay.max)) replay.value = "0";
      playing = true;
      const step = Math.max(1, Math.ceil(tree.nodes.length / 300)); // about five seconds
      const advance = () => {
        if (!playing) return;
        replay.value = String(Math.min(Number(replay.max), Number(replay.value) + step));
        outputs();
        draw();
        if (Number(replay.value) >= Number(replay.max)) playing = false;
        else requestAnimationFrame(advance);
        $("play").textContent = playing ? "❚❚ pause" : "▶ replay";
      };
      requestAnimationFrame(advance);
    }
    $("play").textContent = playing ? "❚❚ pause" : "▶ replay";
  }

  function nearest(clientX, clientY) {
    const box = canvas.getBoundingClientRect();
    const [px, py] = [clientX - box.left, clientY - box.top];
    const { visible } = shown();
    let best = null;
    let bestDistance = 12 * 12;
    for (let i = 0; i < tree.nodes.length; i++) {
      if (!visible[i]) continue;
      const distance = (screenX(i) - px) ** 2 + (screenY(i) - py) ** 2;
      if (distance < bestDistance) [best, bestDistance] = [i, distance];
    }
    return best;
  }

  let drag = null;
  canvas.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY, vx: view.x, vy: view.y, moved: false };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const [dx, dy] = [event.clientX - drag.x, event.clientY - drag.y];
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (drag.moved) {
      view.x = drag.vx + dx;
      view.y = drag.vy + dy;
      schedule();
    }
  });
  canvas.addEventListener("pointerup", (event) => {
    if (drag && !drag.moved && tree) {
      const id = nearest(event.clientX, event.clientY);
      if (id !== null) select(id);
    }
    drag = null;
  });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = canvas.getBoundingClientRect();
    const [px, py] = [event.clientX - box.left, event.clientY - box.top];
    const factor = Math.exp(-event.deltaY * 0.0015);
    view.x = px - (px - view.x) * factor;
    view.y = py - (py - view.y) * factor;
    view.kx *= factor;
    view.ky *= factor;
    schedule();
  }, { passive: false });

  for (const id of ["depth", "min-score", "replay"]) {
    $(id).addEventListener("input", () => {
      outputs();
      schedule();
    });
  }
  $("colour").addEventListener("change", () => {
    legend();
    schedule();
  });
  $("play").addEventListener("click", play);
  $("fit").addEventListener("click", fit);
  $("problem").addEventListener("change", () => {
    playing = false;
    showProblem(Number($("problem").value));
  });
  window.addEventListener("resize", schedule);

  document.title = `treesearch view: ${DATA.title}`;
  $("title").textContent = DATA.title;
  DATA.problems.forEach((item, index) => {
    const mark = item.row && item.row.correct === true ? " ✓" : item.row && item.row.correct === false ? " ✗" : "";
    const option = element("option", `${item.id}${mark} (${item.nodes.length} nodes)`);
    option.value = String(index);
    $("problem").append(option);
  });
  // For tests and scripts: where a node is drawn (client coordinates), and one whole redraw
  // timed (milliseconds of script).
  window.treeView = {
    point(id) {
      const box = canvas.getBoundingClientRect();
      return { x: box.left + screenX(id), y: box.top + screenY(id) };
    },
    redraw() {
      const start = performance.now();
      draw();
      return performance.now() - start;
    },
  };
  if (DATA.problems.length) showProblem(0);
})();
