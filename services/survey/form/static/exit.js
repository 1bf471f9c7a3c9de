"use strict";
// The quick exit: leave at once and replace this page in the history, so Back does not return.
// Without JavaScript the link still leaves. ES5 only, for old phones.
document.addEventListener("click", function (event) {
  var node = event.target;
  while (node && node.nodeType === 1 && !(node.tagName === "A" && /(^|\s)exit(\s|$)/.test(node.className))) {
    node = node.parentNode;
  }
  if (!node || node.nodeType !== 1) return;
  event.preventDefault();
  window.location.replace(node.href);
});
