-- The common append (events, unique claims, a new user's registry row) runs
-- as one statement; a claim held by another owner aborts it through this.
CREATE FUNCTION roster_claim_taken(kind text) RETURNS void
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'RS001', MESSAGE = kind;
END
$$;
