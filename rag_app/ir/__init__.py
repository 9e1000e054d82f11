"""The information-retrieval layer every other part reads the same way.

- `rag_app.ir.beir`: BEIR-layout datasets (corpus, queries, qrels), with reused query ids
  disambiguated rather than merged (`rag_app.ir.beir_write` writes them);
- `rag_app.ir.metrics`: Recall, Precision, MRR, nDCG, MAP and hit rate at k, per query;
- `rag_app.ir.stats`: paired bootstrap intervals and randomization tests;
- `rag_app.ir.stopwords`: the one English stop-word list and the set each use derives.

It sits at the bottom (like `pyserini.eval`), so the eval harness, the trainer's guard and
the recipe / fusion selection score questions with one definition of each.
"""
