-- A preference store at schema v1 (written by the labeler before rounds had a recipe and a
-- complete flag): 2 rounds, 4 comparisons, 2 votes. Media paths point at PNGs that are not included.
BEGIN TRANSACTION;
CREATE TABLE assignments (
	id INTEGER NOT NULL, 
	comparison_id INTEGER NOT NULL, 
	annotator VARCHAR(100) NOT NULL, 
	token VARCHAR(64) NOT NULL, 
	shown JSON NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	issued_at DATETIME NOT NULL, 
	expires_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (comparison_id, annotator), 
	FOREIGN KEY(comparison_id) REFERENCES comparisons (id), 
	UNIQUE (token)
);
INSERT INTO "assignments" VALUES(1,1,'ann','MCJwc66Tb4MVPiua7Z33ARGt','[2, 1]','voted','2026-12-01 03:38:57.916066','2026-12-01 03:48:57.916066');
INSERT INTO "assignments" VALUES(2,2,'ann','tuq_JDrLo1YyhDSYwkKITJpy','[4, 3]','skipped','2026-12-01 03:38:57.936414','2026-12-01 03:48:57.936414');
CREATE TABLE candidates (
	id INTEGER NOT NULL, 
	round_id INTEGER NOT NULL, 
	item_id INTEGER NOT NULL, 
	"index" INTEGER NOT NULL, 
	text TEXT, 
	image_path TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(round_id) REFERENCES rounds (id), 
	FOREIGN KEY(item_id) REFERENCES items (id)
);
INSERT INTO "candidates" VALUES(1,1,1,0,'top red triangle image of right',NULL);
INSERT INTO "candidates" VALUES(2,1,1,1,'of left circle image small',NULL);
INSERT INTO "candidates" VALUES(3,1,2,0,'small blue triangle small on',NULL);
INSERT INTO "candidates" VALUES(4,1,2,1,'green the of',NULL);
INSERT INTO "candidates" VALUES(5,1,3,0,'blue left top the circle of bottom',NULL);
INSERT INTO "candidates" VALUES(6,1,3,1,'triangle red a green right a of',NULL);
INSERT INTO "candidates" VALUES(7,2,4,0,'green triangle blue of',NULL);
INSERT INTO "candidates" VALUES(8,2,4,1,'of right circle blue of a',NULL);
INSERT INTO "candidates" VALUES(9,2,4,2,'top a bottom triangle square blue',NULL);
CREATE TABLE comparisons (
	id INTEGER NOT NULL, 
	round_id INTEGER NOT NULL, 
	item_id INTEGER NOT NULL, 
	candidate_ids JSON NOT NULL, 
	k INTEGER NOT NULL, 
	filled INTEGER NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(round_id) REFERENCES rounds (id), 
	FOREIGN KEY(item_id) REFERENCES items (id)
);
INSERT INTO "comparisons" VALUES(1,1,1,'[1, 2]',2,1,'2026-12-01 03:38:57.899204');
INSERT INTO "comparisons" VALUES(2,1,2,'[3, 4]',2,0,'2026-12-01 03:38:57.901917');
INSERT INTO "comparisons" VALUES(3,1,3,'[5, 6]',2,0,'2026-12-01 03:38:57.905435');
INSERT INTO "comparisons" VALUES(4,2,4,'[7, 8, 9]',3,0,'2026-12-01 03:38:57.913707');
CREATE TABLE items (
	id INTEGER NOT NULL, 
	task VARCHAR(32) NOT NULL, 
	row_id VARCHAR(200) NOT NULL, 
	image_sha VARCHAR(64) NOT NULL, 
	image_path TEXT NOT NULL, 
	input_path TEXT NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (task, row_id, image_sha)
);
INSERT INTO "items" VALUES(1,'captioning','row-0','a7d36bd9eeed3231c51569cf4a2f699dabdcd69ea921bf3b7603f0f5d273a533','inputs/a7/a7d36bd9eeed3231c51569cf4a2f699dabdcd69ea921bf3b7603f0f5d273a533.png','inputs/a7/a7d36bd9eeed3231c51569cf4a2f699dabdcd69ea921bf3b7603f0f5d273a533.png');
INSERT INTO "items" VALUES(2,'captioning','row-1','84b21b865ea4af7e23491051efad4f88ba18ab7fad4a3ce081d947a6b3c873cf','inputs/84/84b21b865ea4af7e23491051efad4f88ba18ab7fad4a3ce081d947a6b3c873cf.png','inputs/84/84b21b865ea4af7e23491051efad4f88ba18ab7fad4a3ce081d947a6b3c873cf.png');
INSERT INTO "items" VALUES(3,'captioning','row-2','1c7420f9e6f78ea725534967d63bec222b085e248a76d4fd02ab6a354bfae9d5','inputs/1c/1c7420f9e6f78ea725534967d63bec222b085e248a76d4fd02ab6a354bfae9d5.png','inputs/1c/1c7420f9e6f78ea725534967d63bec222b085e248a76d4fd02ab6a354bfae9d5.png');
INSERT INTO "items" VALUES(4,'captioning','row-0','283dc84b63c1461ca14ed26221e402381109c54488e28591e660a51b4acc117b','inputs/28/283dc84b63c1461ca14ed26221e402381109c54488e28591e660a51b4acc117b.png','inputs/28/283dc84b63c1461ca14ed26221e402381109c54488e28591e660a51b4acc117b.png');
CREATE TABLE retractions (
	id INTEGER NOT NULL, 
	vote_id INTEGER NOT NULL, 
	annotator VARCHAR(100) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (vote_id), 
	FOREIGN KEY(vote_id) REFERENCES votes (id)
);
CREATE TABLE rounds (
	id INTEGER NOT NULL, 
	task VARCHAR(32) NOT NULL, 
	policy_path TEXT NOT NULL, 
	policy_name VARCHAR(200) NOT NULL, 
	k INTEGER NOT NULL, 
	seed INTEGER, 
	data_path TEXT, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "rounds" VALUES(1,'captioning','/runs/policy-a','policy-a',2,0,NULL,'2026-12-01 03:38:57.880241');
INSERT INTO "rounds" VALUES(2,'captioning','/runs/policy-b','policy-b',3,1,NULL,'2026-12-01 03:38:57.908277');
CREATE TABLE schema_version (
	version INTEGER NOT NULL, 
	PRIMARY KEY (version)
);
INSERT INTO "schema_version" VALUES(1);
CREATE TABLE votes (
	id INTEGER NOT NULL, 
	assignment_id INTEGER NOT NULL, 
	comparison_id INTEGER NOT NULL, 
	annotator VARCHAR(100) NOT NULL, 
	choice VARCHAR(16) NOT NULL, 
	ranking JSON, 
	shown JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	elapsed_ms INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(assignment_id) REFERENCES assignments (id), 
	FOREIGN KEY(comparison_id) REFERENCES comparisons (id)
);
INSERT INTO "votes" VALUES(1,1,1,'ann','a','null','[2, 1]','2026-12-01 03:38:57.933355',17);
INSERT INTO "votes" VALUES(2,2,2,'ann','skip','null','[4, 3]','2026-12-01 03:38:57.944804',8);
CREATE INDEX ix_candidates_round_id ON candidates (round_id);
CREATE INDEX ix_candidates_item_id ON candidates (item_id);
CREATE INDEX ix_comparisons_round_id ON comparisons (round_id);
CREATE INDEX ix_comparisons_item_id ON comparisons (item_id);
CREATE INDEX ix_assignments_annotator_state ON assignments (annotator, state);
CREATE INDEX ix_assignments_comparison_id ON assignments (comparison_id);
CREATE INDEX ix_votes_comparison_id ON votes (comparison_id);
CREATE INDEX ix_votes_annotator ON votes (annotator);
CREATE INDEX ix_votes_assignment_id ON votes (assignment_id);
COMMIT;
