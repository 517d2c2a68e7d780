€ 
	name_namename_descript"
	name_name(2name_sha2568@