// Let files be dropped onto a form: it shows "over" while dragged on, and hands the files on.
window.winnowDropZone = function (form, onFiles) {
  "use strict";
  ["dragenter", "dragover"].forEach((ev) => form.addEventListener(ev, (e) => {
    e.preventDefault();
    form.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((ev) => form.addEventListener(ev, () => form.classList.remove("over")));
  form.addEventListener("drop", (e) => {
    e.preventDefault();
    onFiles([...e.dataTransfer.files]);
  });
};
