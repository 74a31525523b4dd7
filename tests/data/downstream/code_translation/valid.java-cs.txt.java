public int size() {return count;}
