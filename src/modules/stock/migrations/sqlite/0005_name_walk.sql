-- PostgreSQL's name walk reads a narrow copy of the products' names (its 0005_name_walk);
-- SQLite's FTS5 reads its doclists newest first and needs none. Kept so both engines record
-- the same migration versions (`ekart data copy` compares them).
SELECT 1;
