À
	name_team	name_rolename_principa (08