// The site's knowledge base in the site database: documents, their passages, and an FTS5 index
// of the passages' words (see segment.ts) ranked with BM25. A passage's heading and its
// document's title are indexed with it (they often carry the words a question uses).
import { resolve } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../../shared/errors.ts';
import type { Passage } from '../prompt.ts';
import { passagesOf, readDocument } from './documents.ts';
import { matchQuery, segmentWords } from './segment.ts';

export interface KbDocument {
  id: number;
  name: string;
  sourcePath: string;
  sha256: string;
  format: string;
  title: string | null;
  passages: number;
  addedAt: string;
}

/** Passage length when documents are added (characters). */
export const PASSAGE_CHARS = 400;

export function addDocuments(db: Database.Database, paths: string[], o: { replace?: boolean; passageChars?: number } = {}): { added: KbDocument[]; unchanged: string[] } {
  const docs = paths.map((p) => ({ path: resolve(p), doc: readDocument(p) }));
  const added: KbDocument[] = [];
  const unchanged: string[] = [];
  db.transaction(() => {
    for (const { path, doc } of docs) {
      const { sha256 } = doc;
      const existing = db.prepare('SELECT id, sha256 FROM kb_documents WHERE name = ?').get(doc.name) as { id: number; sha256: string } | undefined;
      if (existing?.sha256 === sha256) {
        unchanged.push(doc.name);
        continue;
      }
      if (existing && !o.replace) throw fail('FEDLORA_ERR_KB_DOCUMENT', `${path}: a different document named ${doc.name} is in the knowledge base; pass --replace to replace it`);
      if (existing) removeById(db, existing.id);
      const id = Number(db.prepare('INSERT INTO kb_documents (name, source_path, sha256, format, title, passages) VALUES (?,?,?,?,?,0)').run(doc.name, path, sha256, doc.format, doc.title).lastInsertRowid);
      let ord = 0;
      const insP = db.prepare('INSERT INTO kb_passages (doc_id, ord, heading, text) VALUES (?,?,?,?)');
      const insF = db.prepare('INSERT INTO kb_fts (rowid, terms) VALUES (?, ?)');
      for (const s of doc.sections) {
        for (const text of passagesOf(s, o.passageChars ?? PASSAGE_CHARS)) {
          const pid = Number(insP.run(id, ord++, s.heading, text).lastInsertRowid);
          insF.run(pid, segmentWords([doc.title ?? '', s.heading ?? '', text].join('\n')).join(' '));
        }
      }
      db.prepare('UPDATE kb_documents SET passages = ? WHERE id = ?').run(ord, id);
      added.push(documentById(db, id));
    }
  }).immediate();
  return { added, unchanged };
}

function removeById(db: Database.Database, id: number): void {
  db.prepare('DELETE FROM kb_fts WHERE rowid IN (SELECT id FROM kb_passages WHERE doc_id = ?)').run(id);
  db.prepare('DELETE FROM kb_passages WHERE doc_id = ?').run(id);
  db.prepare('DELETE FROM kb_documents WHERE id = ?').run(id);
}

export function removeDocument(db: Database.Database, name: string): { passages: number } {
  return db.transaction(() => {
    const d = db.prepare('SELECT id, passages FROM kb_documents WHERE name = ?').get(name) as { id: number; passages: number } | undefined;
    if (!d) throw fail('FEDLORA_ERR_NOT_FOUND', `no document ${JSON.stringify(name)} in the knowledge base (see \`fedlora site kb list\`)`);
    removeById(db, d.id);
    return { passages: d.passages };
  }).immediate();
}

interface DocumentRow { id: number; name: string; source_path: string; sha256: string; format: string; title: string | null; passages: number; added_at: string }
const documentOf = (r: DocumentRow): KbDocument => ({ id: r.id, name: r.name, sourcePath: r.source_path, sha256: r.sha256, format: r.format, title: r.title, passages: r.passages, addedAt: r.added_at });

export function listDocuments(db: Database.Database): KbDocument[] {
  return (db.prepare('SELECT * FROM kb_documents ORDER BY name').all() as DocumentRow[]).map(documentOf);
}

function documentById(db: Database.Database, id: number): KbDocument {
  return documentOf(db.prepare('SELECT * FROM kb_documents WHERE id = ?').get(id) as DocumentRow);
}

/** The k best passages for a question by BM25 (lower bm25() is better; score = -bm25). */
export function searchPassages(db: Database.Database, question: string, k: number): Passage[] {
  const q = matchQuery(question);
  if (!q) return [];
  const rows = db.prepare(`SELECT p.id, d.name AS doc, p.heading, p.text, bm25(kb_fts) AS rank
      FROM kb_fts JOIN kb_passages p ON p.id = kb_fts.rowid JOIN kb_documents d ON d.id = p.doc_id
      WHERE kb_fts MATCH ? ORDER BY rank LIMIT ?`).all(q, k) as { id: number; doc: string; heading: string | null; text: string; rank: number }[];
  return rows.map((r) => ({ id: r.id, docName: r.doc, heading: r.heading, text: r.text, score: -r.rank }));
}
