// The metrics page's charts: the series come server-rendered in <script type="application/json" id="series">
// (no inline script: the page's CSP allows only this site's files).
(function () {
  "use strict";

  function fmt(value, unit) {
    if (value === null || value === undefined) return "";
    if (unit === "ms") return value >= 1000 ? (value / 1000).toFixed(1) + " s" : Math.round(value) + " ms";
    if (unit === "%") return value.toFixed(1) + " %";
    if (unit === "$") return "$" + value.toFixed(2);
    return String(Math.round(value * 100) / 100);
  }

  function draw() {
    var source = document.getElementById("series");
    if (!source || typeof uPlot === "undefined") return;
    var data = JSON.parse(source.textContent);
    document.querySelectorAll("[data-chart]").forEach(function (box) {
      var spec = data.charts[box.getAttribute("data-chart")];
      var width = Math.max(260, box.clientWidth || 300);
      var series = [{}].concat(spec.series.map(function (s) {
        return { label: s.label, stroke: s.color, width: 2, spanGaps: false, value: function (u, v) { return fmt(v, spec.unit); } };
      }));
      var opts = {
        width: width,
        height: 200,
        series: series,
        scales: { x: { time: true } },
        // Times on the axis in UTC, like every time voicemon shows.
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
        axes: [{}, { size: 60, values: function (u, vals) { return vals.map(function (v) { return fmt(v, spec.unit); }); } }],
        legend: { live: true },
      };
      var values = [data.t].concat(spec.series.map(function (s) { return s.values; }));
      box.textContent = "";
      if (data.t.length === 0) {
        box.textContent = "no rows in this range";
        return;
      }
      new uPlot(opts, values, box);
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
