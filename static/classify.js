// Drag and drop or paste an image onto the classify form; the form works without this.
(function () {
  const form = document.getElementById("classify-form");
  const input = document.getElementById("file");
  if (!form || !input) return;
  function submitFile(file) {
    if (!file || !file.type.startsWith("image/")) return;
    const dt = new DataTransfer();
    dt.items.add(file);
    input.files = dt.files;
    form.submit();
  }
  ["dragenter", "dragover"].forEach((ev) => form.addEventListener(ev, (e) => {
    e.preventDefault();
    form.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((ev) => form.addEventListener(ev, () => form.classList.remove("over")));
  form.addEventListener("drop", (e) => {
    e.preventDefault();
    submitFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...e.clipboardData.items].find((i) => i.kind === "file");
    if (item) submitFile(item.getAsFile());
  });
})();
