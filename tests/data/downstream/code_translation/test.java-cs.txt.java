public boolean isEmpty() {return count == 0;}
