// {{name}}: a weft `chunker` stage in JavaScript, built with componentize-js
// into a WebAssembly component for world `chunker` of wit/weft.wit.
//
// It makes one chunk per paragraph (runs of lines separated by blank lines),
// with ids `<doc id>#<n>` and `seq = n` from 0, so a replay overwrites rather
// than duplicates. Each chunk carries its document's metadata. A document
// whose id contains `#` or whose text is blank is an invalid input.
//
// componentize-js conventions: the exported interface `weft:plugin/chunk` is
// the exported object `chunk`; records are objects with camelCase fields
// (`docId`); a `result` inside a returned list is `{ tag: 'ok', val }` or
// `{ tag: 'err', val }`; enums are their WIT names as strings.

/** The paragraphs of `text`: runs of non-blank lines, trimmed. */
function paragraphs(text) {
  const out = [];
  let current = [];
  for (const line of [...text.split(/\r?\n/), '']) {
    if (line.trim()) {
      current.push(line);
    } else if (current.length > 0) {
      out.push(current.join('\n').trim());
      current = [];
    }
  }
  return out;
}

/** The chunks of one document; throws an Error saying why there are none. */
function splitDoc(doc) {
  if (!doc.id) throw new Error('document id is empty');
  if (doc.id.includes('#')) {
    throw new Error(
      `document id \`${doc.id}\` contains \`#\`, which separates the document id from the chunk number in chunk ids`,
    );
  }
  const parts = paragraphs(doc.text);
  if (parts.length === 0) throw new Error(`document \`${doc.id}\` has no text`);
  return parts.map((text, seq) => ({ id: `${doc.id}#${seq}`, docId: doc.id, seq, text, metadata: doc.metadata }));
}

export const chunk = {
  // One result per document, in order; a bad document fails alone.
  split(docs) {
    return docs.map((doc) => {
      try {
        return { tag: 'ok', val: splitDoc(doc) };
      } catch (e) {
        return { tag: 'err', val: { kind: 'invalid-input', message: e.message } };
      }
    });
  },
};
