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
  window.winnowDropZone(form, (files) => submitFile(files[0]));
  document.addEventListener("paste", (e) => {
    const item = [...e.clipboardData.items].find((i) => i.kind === "file");
    if (item) submitFile(item.getAsFile());
  });
})();
