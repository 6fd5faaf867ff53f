// Keep the table of uploads up to date: ask the JSON feed every half second
// and update each row in place.
(function () {
  "use strict";

  var POLL_MS = 500;
  var tbody = document.getElementById("uploads");
  var template = document.getElementById("row-template");
  var live = document.getElementById("live");
  var summary = document.getElementById("summary");
  var emptyRow = tbody.querySelector("tr.empty");

  var LABEL_ORDER = ["local", "transferring", "remote", "failed", "deleted"];

  function order(label) {
    var index = LABEL_ORDER.indexOf(label);
    return index < 0 ? LABEL_ORDER.length : index;
  }

  function setText(element, text) {
    if (element.textContent !== text) {
      element.textContent = text;
    }
  }

  function showTime(time) {
    var date = new Date(time.dateTime);
    setText(time, date.toLocaleTimeString());
    time.title = date.toLocaleString();
  }

  function newRow() {
    return template.content.querySelector("tr").cloneNode(true);
  }

  function fill(row, upload) {
    var changedPlace = row.dataset.servedFrom !== upload.served_from ||
      row.dataset.url === undefined;
    row.dataset.id = upload.id;
    row.dataset.status = upload.status;
    row.className = row.className.replace(/\bstatus-\S*/g, "").trim() +
      " status-" + upload.status;

    setText(row.querySelector(".basename"), upload.basename);
    row.querySelector(".basename").title = upload.name;
    setText(row.querySelector(".path"), upload.name);
    setText(row.querySelector(".badge"), upload.label);
    setText(row.querySelector(".help"), upload.help +
      (upload.attempts > 1 ? " Attempts: " + upload.attempts + "." : ""));

    var error = row.querySelector(".error");
    setText(error, upload.error);
    error.hidden = !upload.error;

    var retry = row.querySelector("form.retry");
    retry.action = upload.retry_url;
    retry.hidden = upload.status !== "failed";

    setText(row.querySelector(".served-from"), upload.served_from);
    var time = row.querySelector("time");
    time.dateTime = upload.uploaded;
    showTime(time);

    // Signed URLs may differ on each request; load the file again only when
    // it has moved to the other storage.
    if (changedPlace) {
      row.dataset.servedFrom = upload.served_from;
      row.dataset.url = upload.url;
      var link = row.querySelector("a.url");
      link.href = upload.url;
      setText(link, upload.url);
      var thumbLink = row.querySelector(".thumb-link");
      thumbLink.href = upload.url;
      thumbLink.hidden = !upload.url;
      var image = row.querySelector(".thumb img");
      var ext = row.querySelector(".thumb .ext");
      image.hidden = !upload.is_image;
      ext.hidden = upload.is_image;
      if (upload.is_image && upload.url) {
        image.src = upload.url;
      } else {
        image.removeAttribute("src");
        var dot = upload.name.lastIndexOf(".");
        setText(ext, dot > 0 ? upload.name.slice(dot + 1).toUpperCase() : "FILE");
      }
    }
  }

  function render(uploads) {
    var seen = {};
    var counts = {};
    uploads.forEach(function (upload, index) {
      var row = tbody.querySelector('tr.upload[data-id="' + upload.id + '"]');
      if (!row) {
        row = newRow();
        row.classList.add("new");
      }
      fill(row, upload);
      if (tbody.children[index] !== row) {
        tbody.insertBefore(row, tbody.children[index] || emptyRow);
      }
      seen[upload.id] = true;
      counts[upload.label] = (counts[upload.label] || 0) + 1;
    });
    tbody.querySelectorAll("tr.upload").forEach(function (row) {
      if (!seen[row.dataset.id]) {
        row.remove();
      }
    });
    emptyRow.hidden = uploads.length > 0;
    setText(summary, Object.keys(counts).sort(function (a, b) {
      return order(a) - order(b);
    }).map(function (label) {
      return counts[label] + " " + label;
    }).join(" \u00b7 "));
  }

  function poll() {
    fetch(tbody.dataset.feed, { headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        live.classList.add("on");
        live.textContent = "live";
        render(data.uploads);
      })
      .catch(function () {
        live.classList.remove("on");
        live.textContent = "offline, retrying";
      })
      .then(function () {
        window.setTimeout(poll, POLL_MS);
      });
  }

  // Retry without leaving the page; the next poll shows the new state.
  tbody.addEventListener("submit", function (event) {
    var form = event.target.closest("form.retry");
    if (!form) {
      return;
    }
    event.preventDefault();
    form.querySelector("button").disabled = true;
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
    }).finally(function () {
      form.querySelector("button").disabled = false;
    });
  });

  tbody.querySelectorAll("tr.upload").forEach(function (row) {
    row.dataset.url = row.querySelector("a.url").getAttribute("href");
    showTime(row.querySelector("time"));
  });
  poll();
})();
